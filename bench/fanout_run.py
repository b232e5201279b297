"""The fan-out benchmark's run: start the server (and etcd) and the workers, set up, measure.

`run` starts a real `pcloud-server` (tests.support.coord.CoordServer) in a temp dir, on SQLite or
on an etcd started for the run, creates the accounts, registers the simulated nodes through the
client workers, has every node hold its stream (or long poll), measures the changes
(bench.fanout_measure) and then the floor (bench.fanout_floor). Everything it starts is stopped
by PID and the temp dir removed, also after an error or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import nacl.public

from tests.support.coord import CoordServer

from .fanout_client import NodeSpec
from .fanout_floor import run_floor
from .fanout_measure import measure_change, measure_window, wait_quiet
from .fanout_results import Config, Results, ServerFigures
from .fanout_servers import Fleet, start_fleet, wait_replicated
from .fanout_workers import Workers, fake_key, pct, raise_nofile
from .procfs import rss_mb


async def create_accounts(
    server: CoordServer, admin_token: str, users: list[str], parallel: int = 6
) -> dict[str, str]:
    """Users and one reusable client auth key each; argon2id makes users the slow part."""
    sem = asyncio.Semaphore(parallel)
    keys: dict[str, str] = {}
    async with server.async_client(admin_token) as c:

        async def one(name: str) -> None:
            async with sem:
                r = await c.post(
                    "/api/v1/users",
                    json={"username": name, "password": "bench-password", "admin": False},
                )
                r.raise_for_status()
                r = await c.post(
                    "/api/v1/auth-keys",
                    json={"user": name, "reusable": True, "expires_in_s": 24 * 3600},
                )
                r.raise_for_status()
                keys[name] = str(r.json()["key"])

        await asyncio.gather(*(one(u) for u in users))
    return keys


def run(cfg: Config, log: Callable[[str], None] = lambda s: print(s, flush=True)) -> Results:
    if cfg.servers < 1 or cfg.nodes <= cfg.servers or cfg.users < 1:
        raise ValueError("need --servers >= 1, --users >= 1 and more --nodes than --servers")
    if cfg.nodes > 60_000:
        raise ValueError("--nodes above 60000 does not fit the /16 overlay network used")
    if cfg.store not in ("sqlite", "etcd") or not 1 <= cfg.etcd_members <= 3:
        raise ValueError("--store is sqlite or etcd, --etcd-members 1 to 3")
    started = time.monotonic()
    # The server holds one socket per node, each worker its share; keep a margin for the rest.
    raise_nofile(cfg.nodes + 1024)
    res = Results(
        nodes=cfg.nodes,
        users=cfg.users,
        servers=cfg.servers,
        procs=cfg.procs,
        store=cfg.store,
        etcd_members=cfg.etcd_members if cfg.store == "etcd" else 0,
        mode=cfg.mode,
        coord_servers=cfg.coord_servers,
    )
    tmp = Path(tempfile.mkdtemp(prefix="pcloud-bench-"))
    fleet: Fleet | None = None
    workers: Workers | None = None
    stack = ExitStack()
    try:
        fleet = start_fleet(cfg, tmp, stack, log)
        server = fleet.first  # accounts, the changes and the floor go through this one
        pids = fleet.pids
        workers = Workers(cfg.procs)
        admin = server.setup_admin()
        res.rss_start_mb = max(fleet.rss())

        # Accounts.
        t = time.monotonic()
        usernames = [f"user{u}" for u in range(cfg.users)]
        keys = asyncio.run(create_accounts(server, admin, usernames))
        wait_replicated(fleet, admin, len(keys))
        res.users_s = time.monotonic() - t
        log(f"{cfg.users} users and auth keys in {res.users_s:.1f} s")

        # Nodes: the server-role ones (admin-owned, so under the default policy every node sees
        # them), then clients round-robin over users; workers get clients round-robin too.
        owner: list[str] = []
        specs: list[NodeSpec] = []
        for i in range(cfg.nodes):
            endpoints = [f"198.18.{i // 250}.{i % 250 + 1}:41641"]
            if i < cfg.servers:
                owner.append("admin")
                private = nacl.public.PrivateKey.generate()
                public = base64.b64encode(bytes(private.public_key)).decode()
                spec = NodeSpec(i, f"srv{i}", public, endpoints, admin, "server")
                spec.private_key = base64.b64encode(bytes(private)).decode()
                specs.append(spec)
            else:
                user = usernames[(i - cfg.servers) % cfg.users]
                owner.append(user)
                specs.append(NodeSpec(i, f"{user}-d{i}", fake_key(), endpoints, keys[user], None))
            specs[-1].port = fleet.port_for(i)
        ca_pem = (server.state_dir / "tls" / "ca.pem").read_text()
        per_worker = max(1, cfg.reg_concurrency // cfg.procs)
        shares: list[list[NodeSpec]] = [[] for _ in range(cfg.procs)]
        for i, spec in enumerate(specs[cfg.servers :]):
            shares[i % cfg.procs].append(spec)
        server_share = specs[: cfg.servers]
        shares[0] = server_share + shares[0]
        workers.call(
            [("init", server.host, server.port, ca_pem, s, per_worker) for s in shares],
            "ready",
            60,
        )

        # Registration: every node concurrently (worker 0 starts with the server-role nodes).
        node_id: dict[int, int] = {}
        token: dict[int, str] = {}
        cpu0 = fleet.cpu()
        t = time.monotonic()
        answers = workers.broadcast(("register",), "registered", 600 + cfg.nodes / 20)
        reg_wall = time.monotonic() - t
        reg_cpu = [c - c0 for c, c0 in zip(fleet.cpu(), cpu0, strict=True)]
        res.reg_server_cpu_s = sum(reg_cpu)
        connects: list[float] = []
        latencies: list[float] = []
        failures: list[str] = []
        res.reg_retries = sum(a[2] for a in answers)
        for _, rows, _retries in answers:
            for idx, nid, tok, connect, latency, error in rows:
                if error:
                    failures.append(f"{specs[idx].hostname}: {error}")
                    continue
                node_id[idx], token[idx] = nid, tok
                connects.append(connect)
                latencies.append(latency)
        if failures:
            raise RuntimeError(f"{len(failures)} registrations failed, e.g. {failures[:3]}")
        res.reg_rate = cfg.nodes / reg_wall
        res.reg_p50_ms = pct(latencies, 0.5) * 1000
        res.reg_p99_ms = pct(latencies, 0.99) * 1000
        res.connect_p50_ms = pct(connects, 0.5) * 1000
        rss_reg = fleet.rss()
        res.rss_after_reg_mb = max(rss_reg)
        log(
            f"registered {cfg.nodes} nodes in {reg_wall:.1f} s ({res.reg_rate:.0f}/s, "
            f"{res.reg_retries} retries after a 503), "
            f"server RSS {res.rss_after_reg_mb:.0f} MB"
        )

        # Both control connections are opened before the polls start: while the server takes
        # 10,000 first polls its loop is saturated for many seconds and a new TLS handshake can
        # time out. Keep-alive (75 s on the server) holds them, as they are used every 0.2 s.
        metrics_clients = [s.client(timeout=120) for s in fleet.servers]
        put_client = server.client(timeout=120)
        try:
            for c in metrics_clients:
                c.get("/api/v1/health")
            put_client.get("/api/v1/health")  # the TLS handshake is not part of a change
            # Long polls: every node re-arms forever; wait until the server holds them all and
            # the presence churn of 10,000 nodes coming online has died down.
            cpu0 = fleet.cpu()
            t = time.monotonic()
            if cfg.mode == "stream":
                workers.broadcast(("stream",), "streaming", 30)
            else:
                workers.broadcast(("poll", cfg.poll_timeout), "polling", 30)
            wait_quiet(workers, metrics_clients, cfg.nodes, timeout=60 + cfg.nodes / 50)
            res.polls_ready_s = time.monotonic() - t
            polls_cpu = [c - c0 for c, c0 in zip(fleet.cpu(), cpu0, strict=True)]
            res.polls_server_cpu_s = sum(polls_cpu)
            rss_polls = fleet.rss()
            res.rss_polls_mb = max(rss_polls)
            log(
                f"{cfg.nodes} long polls held after {res.polls_ready_s:.1f} s, "
                f"server RSS {res.rss_polls_mb:.0f} MB"
            )

            worker_of = {node_id[s.idx]: w for w, share in enumerate(shares) for s in share}
            server_of = {nid: fleet.index_for(idx) for idx, nid in node_id.items()}
            by_user: dict[str, list[int]] = {}
            for idx, user in enumerate(owner):
                by_user.setdefault(user, []).append(node_id[idx])
            server_ids = by_user["admin"]
            all_ids = list(node_id.values())
            # Changes go through server 0, to nodes streaming there (bench.fanout_servers).
            clients = [i for i in range(cfg.servers, cfg.nodes) if fleet.index_for(i) == 0]
            # Distinct users for the client changes, spread over the id range.
            step = max(1, len(clients) // max(1, cfg.changes))
            picks: list[tuple[str, int]] = [
                ("client", clients[(k * step + k) % len(clients)]) for k in range(cfg.changes)
            ] + [("server", k % cfg.servers) for k in range(cfg.changes)]
            plan: list[tuple[str, int, set[int]]] = []  # what the floor repeats

            for k, (kind, idx) in enumerate(picks):
                target = node_id[idx]
                # Default policy: a client is seen by its user's other devices and by the
                # admin-owned servers; a server-role node by every other node.
                if kind == "client":
                    expected = set(by_user[owner[idx]]) | set(server_ids)
                else:
                    expected = set(all_ids)
                expected.discard(target)
                plan.append((kind, target, expected))
                change = measure_change(
                    workers,
                    put_client,
                    metrics_clients,
                    pids,
                    cfg,
                    k,
                    kind,
                    target,
                    token[idx],
                    expected,
                    worker_of,
                    server_of if len(pids) > 1 else None,
                )
                res.changes.append(change)
                log(
                    f"change {k} ({kind} node {target}): {change.woke}/{change.expected} "
                    f"woke in {change.fanout_s * 1000:.0f} ms, {change.unexpected} "
                    f"unexpected, {change.bytes} bytes"
                )
            rss_end, rss_peak = fleet.rss(), fleet.rss("VmHWM")
            res.rss_end_mb, res.rss_peak_mb = max(rss_end), max(rss_peak)
            res.etcd_rss_mb = sum(rss_mb(p) for p in fleet.etcd_pids)
            if len(pids) > 1:
                counts = Counter(server_of.values())
                res.per_server = [
                    ServerFigures(i, counts[i], *row)
                    for i, row in enumerate(
                        zip(reg_cpu, polls_cpu, rss_reg, rss_polls, rss_end, rss_peak, strict=True)
                    )
                ]
        finally:
            for c in metrics_clients:
                c.close()
            put_client.close()
        stats = workers.broadcast(("stats",), "stats", 30)
        res.client_errors = sum(s[3] for s in stats)
        res.last_client_error = next((s[4] for s in stats if s[4]), "")
        if cfg.floor:
            # The same clients and answers against the minimal server, the real one stopped
            # first so the two never share the cores.
            workers.broadcast(("halt",), "halted", 60)
            fleet.stop()
            res.floor = run_floor(
                workers, server, plan, res.changes, worker_of, cfg.settle_s, measure_window, log
            )
    except BaseException:
        for s in fleet.servers if fleet is not None else []:
            if s.log_path is not None and s.log_path.exists():
                tail = s.log_path.read_text()[-3000:]
                print(f"--- {s.state_dir.name} log tail ---\n{tail}", file=sys.stderr)
        raise
    finally:
        # Workers first: closing their connections ends the long polls, so the server's
        # graceful shutdown does not wait on them.
        if workers is not None:
            workers.stop()
        if fleet is not None:
            fleet.stop()
        stack.close()  # the etcd members, by PID, after the server that uses them
        shutil.rmtree(tmp, ignore_errors=True)
    res.elapsed_s = time.monotonic() - started
    return res
