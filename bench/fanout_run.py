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
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import nacl.public

from tests.support.coord import CoordServer, etcd_args

from .fanout_client import NodeSpec
from .fanout_floor import run_floor
from .fanout_measure import measure_change, measure_window, wait_quiet
from .fanout_results import Config, Results
from .fanout_workers import Workers, fake_key, pct, raise_nofile
from .procfs import cpu_s, rss_mb


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
    )
    tmp = Path(tempfile.mkdtemp(prefix="pcloud-bench-"))
    network = "10.0.0.0/24" if cfg.nodes < 250 else "10.0.0.0/16"
    # --offline-grace back to the server's default (CoordServer shortens it for tests): a poll
    # re-armed late under load must not flip the node offline and wake its peers mid-measure.
    server = CoordServer(
        tmp / "server",
        extra_args=[
            *["--network", network, "--offline-grace", "10", "--log-level", "warning"],
            # Every simulated node connects from 127.0.0.1: one source, so the per-source cap
            # must admit them all (it still counts each connection, as in production).
            *["--max-connections-per-source", str(cfg.nodes + 1024)],
        ],
    )
    workers: Workers | None = None
    stack = ExitStack()
    etcd_pids: list[int] = []
    try:
        if cfg.store == "etcd":
            # Imported here: the SQLite run needs neither etcd nor the test helpers' pytest.
            from tests.support.etcd import cluster

            etcd = stack.enter_context(cluster(tmp / "etcd", cfg.etcd_members))
            etcd_pids = [m.pid for m in etcd.members.values() if m.pid is not None]
            t_ = etcd.client_tls
            server.extra_args += etcd_args(etcd.endpoints(), t_.ca, t_.cert, t_.key, "bench")
            log(f"etcd: {cfg.etcd_members} member(s) at {', '.join(etcd.endpoints())}")
        workers = Workers(cfg.procs)
        server.start(timeout=30)
        assert server.proc is not None
        pid = server.proc.pid
        admin = server.setup_admin()
        res.rss_start_mb = rss_mb(pid)

        # Accounts.
        t = time.monotonic()
        usernames = [f"user{u}" for u in range(cfg.users)]
        keys = asyncio.run(create_accounts(server, admin, usernames))
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
        cpu0 = cpu_s(pid)
        t = time.monotonic()
        answers = workers.broadcast(("register",), "registered", 600)
        reg_wall = time.monotonic() - t
        res.reg_server_cpu_s = cpu_s(pid) - cpu0
        connects: list[float] = []
        latencies: list[float] = []
        failures: list[str] = []
        for _, rows in answers:
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
        res.rss_after_reg_mb = rss_mb(pid)
        log(
            f"registered {cfg.nodes} nodes in {reg_wall:.1f} s ({res.reg_rate:.0f}/s), "
            f"server RSS {res.rss_after_reg_mb:.0f} MB"
        )

        # Both control connections are opened before the polls start: while the server takes
        # 10,000 first polls its loop is saturated for many seconds and a new TLS handshake can
        # time out. Keep-alive (75 s on the server) holds them, as they are used every 0.2 s.
        metrics_client = server.client(timeout=120)
        put_client = server.client(timeout=120)
        try:
            metrics_client.get("/api/v1/health")
            put_client.get("/api/v1/health")  # the TLS handshake is not part of a change
            # Long polls: every node re-arms forever; wait until the server holds them all and
            # the presence churn of 10,000 nodes coming online has died down.
            cpu0 = cpu_s(pid)
            t = time.monotonic()
            if cfg.mode == "stream":
                workers.broadcast(("stream",), "streaming", 30)
            else:
                workers.broadcast(("poll", cfg.poll_timeout), "polling", 30)
            wait_quiet(workers, metrics_client, cfg.nodes, timeout=60 + cfg.nodes / 50)
            res.polls_ready_s = time.monotonic() - t
            res.polls_server_cpu_s = cpu_s(pid) - cpu0
            res.rss_polls_mb = rss_mb(pid)
            log(
                f"{cfg.nodes} long polls held after {res.polls_ready_s:.1f} s, "
                f"server RSS {res.rss_polls_mb:.0f} MB"
            )

            worker_of = {node_id[s.idx]: w for w, share in enumerate(shares) for s in share}
            by_user: dict[str, list[int]] = {}
            for idx, user in enumerate(owner):
                by_user.setdefault(user, []).append(node_id[idx])
            server_ids = by_user["admin"]
            all_ids = list(node_id.values())
            clients = [i for i in range(cfg.servers, cfg.nodes)]
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
                    metrics_client,
                    pid,
                    cfg,
                    k,
                    kind,
                    target,
                    token[idx],
                    expected,
                    worker_of,
                )
                res.changes.append(change)
                log(
                    f"change {k} ({kind} node {target}): {change.woke}/{change.expected} "
                    f"woke in {change.fanout_s * 1000:.0f} ms, {change.unexpected} "
                    f"unexpected, {change.bytes} bytes"
                )
            res.rss_end_mb = rss_mb(pid)
            res.rss_peak_mb = rss_mb(pid, "VmHWM")
            res.etcd_rss_mb = sum(rss_mb(p) for p in etcd_pids)
        finally:
            metrics_client.close()
            put_client.close()
        stats = workers.broadcast(("stats",), "stats", 30)
        res.client_errors = sum(s[3] for s in stats)
        res.last_client_error = next((s[4] for s in stats if s[4]), "")
        if cfg.floor:
            # The same clients and answers against the minimal server, the real one stopped
            # first so the two never share the cores.
            workers.broadcast(("halt",), "halted", 60)
            server.stop()
            res.floor = run_floor(
                workers, server, plan, res.changes, worker_of, cfg.settle_s, measure_window, log
            )
    except BaseException:
        if server.log_path is not None and server.log_path.exists():
            tail = server.log_path.read_text()[-3000:]
            print(f"--- server log tail ---\n{tail}", file=sys.stderr)
        raise
    finally:
        # Workers first: closing their connections ends the long polls, so the server's
        # graceful shutdown does not wait on them.
        if workers is not None:
            workers.stop()
        server.stop()
        stack.close()  # the etcd members, by PID, after the server that uses them
        shutil.rmtree(tmp, ignore_errors=True)
    res.elapsed_s = time.monotonic() - started
    return res
