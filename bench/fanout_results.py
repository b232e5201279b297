"""The fan-out benchmark's configuration, its measured figures and the DESIGN section 7 targets.

Plain data: `Config` (what to run), `Change` (one measured change), `Results` (the whole run,
with the PASS/MISS rows it is judged by). bench.server_fanout fills them, bench.fanout_report
prints them and `--json` writes them as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .fanout_floor import FloorResults

TARGET_FANOUT_S = 1.0
TARGET_CLIENT_S = 0.05  # a client change touches a dozen nodes: judged on its own, not by a floor
TARGET_RSS_MB = 300.0


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
    coord_servers: int = 1  # pcloud-server processes sharing the nodes (more than 1: etcd only)


@dataclass
class ServerShare:
    """One change as seen by the nodes held by one coordination server (--coord-servers)."""

    server: int
    expected: int
    woke: int
    unexpected: int
    missing: int
    fanout_s: float
    p50_s: float
    server_cpu_s: float


@dataclass
class ServerFigures:
    """One coordination server's process over the run (--coord-servers)."""

    server: int
    nodes: int  # nodes registered and streamed through it
    reg_cpu_s: float = 0.0
    polls_cpu_s: float = 0.0
    rss_after_reg_mb: float = 0.0
    rss_polls_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_peak_mb: float = 0.0


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
    servers: list[ServerShare] = field(default_factory=list)  # per server (--coord-servers)


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
    reg_retries: int = 0  # registrations answered 503 (store busy/behind) and sent again
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
    coord_servers: int = 1
    per_server: list[ServerFigures] = field(default_factory=list)  # with --coord-servers > 1

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
