"""The fan-out benchmark's coordination servers: one, or several on one etcd sharing the nodes.

`start_fleet` starts `--coord-servers` real `pcloud-server` processes
(tests.support.coord.CoordServer) in the run's temp dir: one on SQLite, or any number on an etcd
of `--etcd-members` members started for the run (tests.support.etcd: 127.0.0.2-4, throwaway CA).
The servers all listen on 127.0.0.1, each on its own port, each with its own `--hostname` in
the store and the first one's network CA (`share_ca`, as join-server does), so one pinned CA
covers them all. Client node `i` registers and holds its stream on server `i % n`, the
server-role nodes on server 0 (`Fleet.index_for`). The changes go through server 0 and reach
the others through the etcd watch (server/sync.py); the changed nodes are ones whose own
stream is on server 0, as a real node talks to one server. (A node changed through another
server than its stream's also gets its own record back: the replay cannot tell the node's own
PUT from an admin's PATCH, state/fanout.py `node_stored`; the bench would count that wake as
extra.)

`Fleet` reads each server's CPU and RSS; `per_server_table` prints, per change, what the nodes
of each server saw (worst and median receive time from the request sent to server 0, exact
wake sets) and each server's CPU, and each process's figures over the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.coord import CoordServer, etcd_args, share_ca, wait_until

from .procfs import cpu_s, rss_mb

if TYPE_CHECKING:
    from .fanout_results import Config, Results


@dataclass
class Fleet:
    servers: list[CoordServer]
    role_servers: int = 0  # the bench's server-role nodes (--servers): all on server 0
    etcd_pids: list[int] = field(default_factory=list)

    @property
    def first(self) -> CoordServer:
        return self.servers[0]

    @property
    def pids(self) -> list[int]:
        pids = []
        for s in self.servers:
            assert s.proc is not None
            pids.append(s.proc.pid)
        return pids

    def index_for(self, node_idx: int) -> int:
        """The server node `node_idx` (the bench's numbering) registers and streams with: the
        server-role nodes with server 0, the clients round-robin."""
        return 0 if node_idx < self.role_servers else node_idx % len(self.servers)

    def port_for(self, node_idx: int) -> int:
        return self.servers[self.index_for(node_idx)].port

    def cpu(self) -> list[float]:
        return [cpu_s(p) for p in self.pids]

    def rss(self, field_name: str = "VmRSS") -> list[float]:
        return [rss_mb(p, field_name) for p in self.pids]

    def stop(self) -> None:
        """Every server, by PID (CoordServer.stop); the first one last."""
        for s in reversed(self.servers):
            s.stop()


def start_fleet(cfg: Config, tmp: Path, stack: ExitStack, log: Callable[[str], None]) -> Fleet:
    """Start the etcd members (if any) and the servers; `stack` stops etcd, the caller the
    servers (`Fleet.stop`, before the stack closes: they use etcd until they stop)."""
    if cfg.coord_servers > 1 and cfg.store != "etcd":
        raise ValueError("--coord-servers above 1 needs --store etcd (servers share its state)")
    network = "10.0.0.0/24" if cfg.nodes < 250 else "10.0.0.0/16"
    base = [
        # --offline-grace back to the server's default (CoordServer shortens it for tests): a
        # stream re-armed late under load must not flip the node offline mid-measure.
        *["--network", network, "--offline-grace", "10", "--log-level", "warning"],
        # Every simulated node connects from 127.0.0.1: one source, so the per-source cap
        # must admit them all (it still counts each connection, as in production).
        *["--max-connections-per-source", str(cfg.nodes + 1024)],
    ]
    names = (
        ["server"] if cfg.coord_servers == 1 else [f"server{i}" for i in range(cfg.coord_servers)]
    )
    fleet = Fleet([CoordServer(tmp / name, extra_args=list(base)) for name in names], cfg.servers)
    if cfg.store == "etcd":
        # Imported here: the SQLite run needs neither etcd nor the test helpers' pytest.
        from tests.support.etcd import cluster

        etcd = stack.enter_context(cluster(tmp / "etcd", cfg.etcd_members))
        fleet.etcd_pids = [m.pid for m in etcd.members.values() if m.pid is not None]
        t_ = etcd.client_tls
        for i, server in enumerate(fleet.servers):
            server.extra_args += etcd_args(etcd.endpoints(), t_.ca, t_.cert, t_.key, f"bench{i}")
        log(f"etcd: {cfg.etcd_members} member(s) at {', '.join(etcd.endpoints())}")
    try:
        fleet.first.start(timeout=60)  # makes the network CA the others take
        rest = fleet.servers[1:]
        for server in rest:
            share_ca(fleet.first.state_dir, server.state_dir)
        if rest:
            # Side by side: each start mostly waits for the process to come up.
            with ThreadPoolExecutor(len(rest)) as pool:
                for f in [pool.submit(server.start, 60) for server in rest]:
                    f.result()
    except BaseException:
        fleet.stop()  # those already started, by PID
        raise
    if len(fleet.servers) > 1:
        log(
            f"{len(fleet.servers)} coordination servers at {', '.join(s.url for s in fleet.servers)}"
        )
    return fleet


def wait_replicated(fleet: Fleet, admin_token: str, keys: int, timeout: float = 60) -> None:
    """Until every server lists the `keys` auth keys made through server 0: the others learn
    them through the etcd watch, and a node registering there before that gets a 401."""
    for server in fleet.servers[1:]:
        with server.client(admin_token) as c:

            def listed(c: Any = c) -> bool:
                return len(c.get("/api/v1/auth-keys").json()) >= keys

            wait_until(listed, timeout, f"{server.url} to list the {keys} auth keys", 0.2)


def cell(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f}"


def per_server_table(res: Results, console: Any) -> None:
    """The per-server figures of a --coord-servers run (rich tables on `console`)."""
    from rich.table import Table

    procs = Table(title=f"{res.coord_servers} coordination servers (changes made through server 0)")
    for col in (
        "server",
        "nodes",
        "CPU registering",
        "CPU until quiet",
        "RSS registered",
        "RSS all held",
        "RSS end / peak",
    ):
        procs.add_column(col, justify="right")
    for f in res.per_server:
        procs.add_row(
            str(f.server),
            str(f.nodes),
            f"{f.reg_cpu_s:.1f} s",
            f"{f.polls_cpu_s:.1f} s",
            f"{f.rss_after_reg_mb:.0f} MB",
            f"{f.rss_polls_mb:.0f} MB",
            f"{f.rss_end_mb:.0f} / {f.rss_peak_mb:.0f} MB",
        )
    console.print(procs)
    table = Table(title="each change on each server's nodes: woke/affected, worst / median ms, CPU")
    table.add_column("#", justify="right")
    table.add_column("kind")
    for s in range(res.coord_servers):
        table.add_column(f"server {s}", justify="right")
    for i, c in enumerate(res.changes):
        cells = [
            f"{sh.woke}/{sh.expected}{' +' + str(sh.unexpected) if sh.unexpected else ''} "
            f"{cell(sh.fanout_s)} / {cell(sh.p50_s)} ms, {sh.server_cpu_s:.2f} s"
            for sh in c.servers
        ]
        table.add_row(str(i), c.kind, *cells)
    console.print(table)
