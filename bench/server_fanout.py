"""Coordination-server fan-out benchmark: many simulated nodes over HTTPS on loopback.

    python -m bench.server_fanout [--nodes 10000] [--users 1000] [--servers 3] [--changes 5]
                                  [--clients-procs N] [--store sqlite|etcd] [--etcd-members 1|3]
                                  [--json PATH]

Starts a real `pcloud-server` (tests.support.coord.CoordServer) in a temp state dir, on its SQLite
file or (`--store etcd`) on an etcd of `--etcd-members` real members started for the run on
loopback (tests.support.etcd: 127.0.0.2-4, throwaway CA, stopped by PID at the end), creates an
admin, users and one reusable auth key per user, and registers `--nodes` simulated nodes (the
`--servers` first ones are server-role nodes registered by the admin, the rest are spread over the
users). Every node then holds a long poll on its own TLS connection, driven by `--clients-procs`
worker processes (bench.fanout_client). Once the server reports every poll waiting, it makes
changes and measures, per change, the time from sending the request until every long poll that
should wake has its answer, which polls woke (exactly the affected set must wake, no other), and
the bytes answered:

- client change: one client's endpoints (wakes its user's other devices and the servers);
- server change: one server-role node's endpoints (wakes every other node).

It also reads the server's RSS (/proc/PID/status) after registration and with every poll held,
and the server's CPU time per phase, then prints the figures against the DESIGN section 7
targets (PASS/MISS). Figures, not assertions: the exit status is 0 unless the run itself failed.
Everything stays on 127.0.0.1; the server and the workers are stopped by PID and the temp dir is
removed at the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import httpx
import nacl.public

from tests.support.coord import CoordServer, etcd_args

from .fanout_client import NodeSpec, worker_main
from .fanout_floor import FloorResults, run_floor

MB = 1024 * 1024
TARGET_FANOUT_S = 1.0
TARGET_CLIENT_S = 0.05  # a client change touches a dozen nodes: judged on its own, not by a floor
TARGET_RSS_MB = 300.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Config:
    nodes: int = 10_000
    users: int = 1_000
    servers: int = 3
    changes: int = 5
    procs: int = 4
    reg_concurrency: int = 64  # registrations in flight over all workers
    poll_timeout: float = 55.0
    settle_s: float = 0.5  # wait after the last expected answer for any wrong extra wake
    json_path: Path | None = None
    quiet: bool = False
    store: str = "sqlite"  # "sqlite" | "etcd"
    etcd_members: int = 1
    mode: str = "stream"  # "stream": netmap streams; "poll": long polls
    floor: bool = True  # measure the floor server (bench.fanout_floor) in the same run


@dataclass
class Change:
    kind: str  # "client" | "server"
    target: int
    expected: int
    woke: int  # expected nodes that received the change
    unexpected: int  # nodes outside the affected set that got an answer in the window
    missing: int  # affected nodes that did not receive it before the deadline
    fanout_s: float  # request sent -> last affected long poll answered
    p50_s: float  # median receive time over the affected polls
    request_s: float  # the PUT's own round trip
    bytes: int  # HTTP bytes of every answer in the window
    server_cpu_s: float
    first_s: float = math.nan  # request sent -> first affected node has the change
    answers: int = 0  # answers received in the window


@dataclass
class Results:
    nodes: int
    users: int
    servers: int
    procs: int
    store: str = "sqlite"
    etcd_members: int = 0
    etcd_rss_mb: float = 0.0  # sum of the members' VmRSS at the end (etcd store only)
    users_s: float = 0.0
    rss_start_mb: float = 0.0
    reg_rate: float = 0.0
    reg_p50_ms: float = 0.0
    reg_p99_ms: float = 0.0
    connect_p50_ms: float = 0.0
    reg_server_cpu_s: float = 0.0
    rss_after_reg_mb: float = 0.0
    polls_ready_s: float = 0.0
    polls_server_cpu_s: float = 0.0
    rss_polls_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_peak_mb: float = 0.0
    client_errors: int = 0
    last_client_error: str = ""
    changes: list[Change] = field(default_factory=list)
    elapsed_s: float = 0.0
    mode: str = "stream"
    floor: FloorResults | None = None

    def worst(self, kind: str) -> float:
        times = [c.fanout_s for c in self.changes if c.kind == kind]
        return max(times) if times else math.nan

    def exact(self) -> bool:
        return all(c.missing == 0 and c.unexpected == 0 for c in self.changes)

    def checks(self) -> list[tuple[str, str, bool]]:
        """(target, measured, met) rows for DESIGN section 7."""
        rss = max(self.rss_polls_mb, self.rss_end_mb)
        floor = self.floor.checks(self.changes) if self.floor is not None else []
        return floor + [
            (
                f"client change reaches every affected node < {TARGET_CLIENT_S * 1000:g} ms",
                f"worst {self.worst('client') * 1000:.0f} ms",
                self.worst("client") < TARGET_CLIENT_S,
            ),
            (
                f"server change reaches every affected poll < {TARGET_FANOUT_S:g} s",
                f"worst {self.worst('server') * 1000:.0f} ms",
                self.worst("server") < TARGET_FANOUT_S,
            ),
            (
                f"server RSS < {TARGET_RSS_MB:g} MB with {self.nodes} polls held",
                f"{rss:.0f} MB",
                rss < TARGET_RSS_MB,
            ),
            (
                "a change wakes exactly the affected polls",
                "exact" if self.exact() else "mismatch",
                self.exact(),
            ),
        ]


# ---- server process figures -----------------------------------------------------------------


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def metric(client: httpx.Client, name: str) -> float:
    text = client.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def raise_nofile(needed: int) -> None:
    """Raise the soft open-files limit; the server subprocess and the workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"need {needed} open files but the hard limit is {hard}: lower --nodes or raise it"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- worker processes -------------------------------------------------------------------------


class Workers:
    """The client processes and the small request/answer protocol over their pipes."""

    def __init__(self, count: int) -> None:
        # spawn, not fork: the parent may hold threads (httpx, the test runner) by then.
        ctx = mp.get_context("spawn")
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        self.done: set[tuple[int, int]] = set()  # (change, worker) pairs reported done
        for _ in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child,), daemon=True)
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)

    def _handle(self, i: int, msg: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """Stash asynchronous messages; return the others."""
        if msg[0] == "done":
            self.done.add((msg[1], i))
            return None
        if msg[0] == "error":
            raise RuntimeError(f"client worker {i} failed:\n{msg[1]}")
        return msg

    def recv(self, i: int, kind: str, timeout: float) -> tuple[Any, ...]:
        deadline = time.monotonic() + timeout
        conn = self.conns[i]
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not conn.poll(left):
                raise TimeoutError(f"client worker {i} did not answer {kind!r} in {timeout:g} s")
            msg = self._handle(i, conn.recv())
            if msg is None:
                continue
            if msg[0] != kind:
                raise RuntimeError(f"client worker {i}: expected {kind!r}, got {msg[0]!r}")
            return msg

    def call(self, msgs: list[tuple[Any, ...]], kind: str, timeout: float) -> list[tuple[Any, ...]]:
        """Send one message to each worker and wait for each one's `kind` answer."""
        for conn, msg in zip(self.conns, msgs, strict=True):
            conn.send(msg)
        return [self.recv(i, kind, timeout) for i in range(len(self.conns))]

    def broadcast(self, msg: tuple[Any, ...], kind: str, timeout: float) -> list[tuple[Any, ...]]:
        return self.call([msg] * len(self.conns), kind, timeout)

    def wait_done(self, change: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while any((change, i) not in self.done for i in range(len(self.conns))):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for conn in wait(self.conns, left):
                assert isinstance(conn, Connection)
                i = self.conns.index(conn)
                msg = self._handle(i, conn.recv())
                if msg is not None:
                    raise RuntimeError(f"client worker {i}: unexpected {msg[0]!r}")
        return True

    def stop(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("stop",))
            except OSError:
                pass
        for i, proc in enumerate(self.procs):
            try:
                if self.conns[i].poll(10):
                    self.conns[i].recv()
            except (OSError, EOFError):
                pass
            proc.join(10)
            if proc.is_alive():
                proc.kill()  # by PID: only the processes this run started
                proc.join(5)
        for conn in self.conns:
            conn.close()


# ---- the run ------------------------------------------------------------------------------------


def fake_key() -> str:
    # The server only checks that the key is 32 bytes of base64; no Curve25519 work needed.
    return base64.b64encode(os.urandom(32)).decode()


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


def wait_quiet(workers: Workers, client: httpx.Client, n: int, timeout: float) -> None:
    """Until the server holds `n` waiting polls and no answer arrived for a second."""
    deadline = time.monotonic() + timeout
    last_answers = -1
    quiet_since = time.monotonic()
    waiting = 0.0
    while time.monotonic() < deadline:
        stats = workers.broadcast(("stats",), "stats", 30)
        answers = sum(s[1] for s in stats)
        outstanding = sum(s[2] for s in stats)
        waiting = metric(client, "pcloud_long_polls_waiting")
        now = time.monotonic()
        if answers != last_answers or waiting < n or outstanding < n:
            last_answers = answers
            quiet_since = now
        elif now - quiet_since >= 1.0:
            return
        time.sleep(0.2)
    raise TimeoutError(f"only {waiting:.0f} of {n} long polls waiting after {timeout:.0f} s")


def measure_change(
    workers: Workers,
    put_client: httpx.Client,
    metrics_client: httpx.Client,
    pid: int,
    cfg: Config,
    k: int,
    kind: str,
    target: int,
    node_token: str,
    expected: set[int],
    worker_of: dict[int, int],
) -> Change:
    wait_quiet(workers, metrics_client, cfg.nodes, timeout=60)

    def put() -> None:
        r = put_client.put(
            "/api/v1/nodes/self/endpoints",
            json={"endpoints": [f"198.19.0.1:{20000 + k}"]},
            headers={"Authorization": f"Bearer {node_token}"},
        )
        r.raise_for_status()

    return measure_window(workers, pid, k, kind, target, expected, worker_of, put, cfg.settle_s)


def measure_window(
    workers: Workers,
    pid: int,
    k: int,
    kind: str,
    target: int,
    expected: set[int],
    worker_of: dict[int, int],
    fire: Callable[[], None],
    settle_s: float,
) -> Change:
    """Open every worker's window, `fire` the change, and collect who got it when."""
    local: list[list[int]] = [[] for _ in workers.conns]
    for nid in expected:
        local[worker_of[nid]].append(nid)
    # Every worker has its window open before the change is sent.
    workers.call([("begin", k, target, ids) for ids in local], "begun", 30)
    cpu0 = cpu_s(pid)
    t0 = time.monotonic()
    fire()
    request_s = time.monotonic() - t0
    workers.wait_done(k, timeout=30)
    # Wrong extra wakes would arrive about as fast as the right ones: a short settle catches them.
    time.sleep(settle_s)
    server_cpu = cpu_s(pid) - cpu0
    records = [rec for _, recs in workers.broadcast(("end", k), "records", 30) for rec in recs]
    got: dict[int, float] = {}
    unexpected: set[int] = set()
    total = 0
    for nid, received, size, hit, _full in records:
        total += size
        if hit and nid in expected:
            got.setdefault(nid, received)
        else:
            unexpected.add(nid)
    delays = [t - t0 for t in got.values()]
    return Change(
        kind=kind,
        target=target,
        expected=len(expected),
        woke=len(got),
        unexpected=len(unexpected),
        missing=len(expected) - len(got),
        fanout_s=max(delays) if delays else math.nan,
        first_s=min(delays) if delays else math.nan,
        answers=len(records),
        p50_s=statistics.median(delays) if delays else math.nan,
        request_s=request_s,
        bytes=total,
        server_cpu_s=server_cpu,
    )


# ---- report -------------------------------------------------------------------------------------


def report(res: Results) -> str:
    from rich.console import Console
    from rich.table import Table

    # Wide enough for the change table even when piped to a file (rich would wrap at 80).
    console = Console(width=max(Console().width, 150))
    store = res.store if res.store == "sqlite" else f"etcd ({res.etcd_members} member(s))"
    setup = Table(
        title=f"pcloud-server fan-out on {store}: {res.nodes} nodes, {res.users} users, "
        f"{res.servers} servers, {res.procs} client processes"
    )
    setup.add_column("phase")
    setup.add_column("figure", justify="right")
    setup.add_row("server RSS at start", f"{res.rss_start_mb:.0f} MB")
    setup.add_row("users + auth keys", f"{res.users_s:.1f} s")
    setup.add_row("registration rate", f"{res.reg_rate:.0f} nodes/s")
    setup.add_row(
        "registration latency p50 / p99", f"{res.reg_p50_ms:.1f} / {res.reg_p99_ms:.1f} ms"
    )
    setup.add_row("TLS connect p50", f"{res.connect_p50_ms:.1f} ms")
    setup.add_row("server CPU during registration", f"{res.reg_server_cpu_s:.1f} s")
    setup.add_row("server RSS after registration", f"{res.rss_after_reg_mb:.0f} MB")
    setup.add_row(
        f"all {'streams' if res.mode == 'stream' else 'long polls'} held after",
        f"{res.polls_ready_s:.1f} s",
    )
    setup.add_row("server CPU until polls quiet", f"{res.polls_server_cpu_s:.1f} s")
    setup.add_row("server RSS, all polls held", f"{res.rss_polls_mb:.0f} MB")
    setup.add_row("server RSS end / peak", f"{res.rss_end_mb:.0f} / {res.rss_peak_mb:.0f} MB")
    if res.store == "etcd":
        setup.add_row("etcd RSS at the end (all members)", f"{res.etcd_rss_mb:.0f} MB")
    setup.add_row("client errors", str(res.client_errors))
    console.print(setup)

    changes = Table(title="changes (request sent -> every affected long poll answered)")
    for col in (
        "#",
        "kind",
        "node",
        "affected",
        "woke",
        "extra",
        "missing",
        "fan-out",
        "first",
        "p50",
        "PUT",
        "bytes",
        "server CPU",
    ):
        changes.add_column(col, justify="right")
    for i, c in enumerate(res.changes):
        changes.add_row(
            str(i),
            c.kind,
            str(c.target),
            str(c.expected),
            str(c.woke),
            str(c.unexpected),
            str(c.missing),
            f"{c.fanout_s * 1000:.0f} ms",
            f"{c.first_s * 1000:.1f} ms",
            f"{c.p50_s * 1000:.0f} ms",
            f"{c.request_s * 1000:.1f} ms",
            f"{c.bytes:,}",
            f"{c.server_cpu_s:.2f} s",
        )
    console.print(changes)
    if res.floor is not None:
        floor = Table(
            title=f"floor server (bench.floor_server, {res.floor.rss_mb:.0f} MB RSS with every "
            "stream held): the same answers, same clients"
        )
        for col in ("#", "kind", "woke", "extra", "floor fan-out", "floor p50", "real", "ratio"):
            floor.add_column(col, justify="right")
        for i, (f, c) in enumerate(zip(res.floor.changes, res.changes, strict=False)):
            floor.add_row(
                str(i),
                f.kind,
                f"{f.woke}/{f.expected}",
                str(f.unexpected),
                f"{f.fanout_s * 1000:.0f} ms",
                f"{f.p50_s * 1000:.0f} ms",
                f"{c.fanout_s * 1000:.0f} ms",
                f"{c.fanout_s / f.fanout_s:.2f}x",
            )
        console.print(floor)

    targets = Table(title="DESIGN section 7 targets")
    targets.add_column("target")
    targets.add_column("measured", justify="right")
    targets.add_column("", justify="center")
    for name, measured, ok in res.checks():
        targets.add_row(name, measured, "[green]PASS[/]" if ok else "[red]MISS[/]")
    console.print(targets)
    if res.last_client_error:
        console.print(f"last client error: {res.last_client_error}")

    verdicts = " ".join(("PASS" if ok else "MISS") for _, _, ok in res.checks())
    cb = [c.bytes for c in res.changes if c.kind == "client"]
    sb = [c.bytes for c in res.changes if c.kind == "server"]
    etcd_rss = f"etcd_rss={res.etcd_rss_mb:.0f}MB " if res.store == "etcd" else ""
    if res.floor is not None:
        etcd_rss += (
            f"floor_ratio client={res.floor.ratio(res.changes, 'client'):.2f}x "
            f"server={res.floor.ratio(res.changes, 'server'):.2f}x "
        )
    return (
        f"fanout store={res.store} nodes={res.nodes} mode={res.mode} reg={res.reg_rate:.0f}/s "
        f"p99={res.reg_p99_ms:.0f}ms "
        f"client_change={res.worst('client') * 1000:.0f}ms "
        f"({statistics.mean(cb) if cb else 0:,.0f} B) "
        f"server_change={res.worst('server') * 1000:.0f}ms "
        f"({statistics.mean(sb) if sb else 0:,.0f} B) "
        f"rss={max(res.rss_polls_mb, res.rss_end_mb):.0f}MB {etcd_rss}"
        f"[{'floor-ratio ' if res.floor else ''}client server rss exact: {verdicts}] in {res.elapsed_s:.0f}s"
    )


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(
        prog="python -m bench.server_fanout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--nodes", type=int, default=10_000, help="simulated nodes, servers included")
    p.add_argument("--users", type=int, default=1_000, help="users the clients are spread over")
    p.add_argument("--servers", type=int, default=3, help="server-role nodes (admin-owned)")
    p.add_argument("--changes", type=int, default=5, help="changes measured of each kind")
    p.add_argument("--clients-procs", type=int, default=4, help="client worker processes")
    p.add_argument(
        "--reg-concurrency", type=int, default=64, help="registrations in flight over all workers"
    )
    p.add_argument(
        "--store",
        choices=("sqlite", "etcd"),
        default="sqlite",
        help="the server's store; etcd starts members on 127.0.0.2-4 for the run",
    )
    p.add_argument(
        "--etcd-members", type=int, default=1, choices=(1, 3), help="etcd members (--store etcd)"
    )
    p.add_argument(
        "--mode",
        choices=("stream", "poll"),
        default="stream",
        help="nodes hold netmap streams (default) or long polls",
    )
    p.add_argument("--no-floor", action="store_true", help="skip the floor server's measurement")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results here")
    a = p.parse_args(argv)
    return Config(
        nodes=a.nodes,
        users=min(a.users, max(1, a.nodes - a.servers)),
        servers=a.servers,
        changes=a.changes,
        procs=max(1, a.clients_procs),
        reg_concurrency=a.reg_concurrency,
        json_path=a.json,
        store=a.store,
        etcd_members=a.etcd_members,
        mode=a.mode,
        floor=not a.no_floor,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        res = run(cfg)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the run failed: say why, exit non-zero
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    summary = report(res)
    if cfg.json_path is not None:
        cfg.json_path.write_text(json.dumps(asdict(res), indent=2))
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
