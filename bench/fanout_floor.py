"""The fan-out benchmark's floor: the same clients and answers against a minimal server.

After the real server's changes are measured (and that server is stopped), the same client
workers open one TLS connection per node to `bench.floor_server` and hold a stream on each, and
every measured change is repeated there: the floor server writes, to exactly the nodes the real
change reached, a line of the same size (prepared before the clock starts), one write per node.
What the clients see is measured the same way (bench.fanout_measure.measure_window), so
`real / floor` is the fan-out as a multiple of what any Python server on this machine, with
these clients and TLS, needs to deliver the same bytes (DESIGN section 7: within 2x).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from tests.support.coord import CoordServer
from tests.support.ports import free_port

from .procfs import rss_mb

if TYPE_CHECKING:
    from .fanout_results import Change

TARGET_RATIO = 2.0


@dataclass
class FloorResults:
    changes: list[Change] = field(default_factory=list)
    ready_s: float = 0.0  # until every node's stream was held
    rss_mb: float = 0.0  # the floor server with every stream held

    def ratio(self, real: list[Change], kind: str) -> float:
        """The worst real / floor fan-out over the changes of `kind`."""
        pairs = [(r, f) for r, f in zip(real, self.changes, strict=False) if r.kind == kind]
        ratios = [r.fanout_s / f.fanout_s for r, f in pairs if f.fanout_s > 0]
        return max(ratios) if ratios else math.nan

    def checks(self, real: list[Change]) -> list[tuple[str, str, bool]]:
        rows = []
        for kind in ("server",):  # a client change is judged by its own target (50 ms)
            ratio = self.ratio(real, kind)
            floor = [f.fanout_s for f in self.changes if f.kind == kind]
            rows.append(
                (
                    f"{kind} change within {TARGET_RATIO:g}x the floor (same run)",
                    f"{ratio:.2f}x (floor worst {max(floor, default=math.nan) * 1000:.0f} ms)",
                    ratio <= TARGET_RATIO,
                )
            )
        return rows


def line_of(target: int, size: int) -> str:
    """A delta line naming `target` as changed, padded to about `size` bytes."""
    base = {"version": 1, "full": False, "peers_changed": [{"node_id": target}], "pad": ""}
    pad = max(0, size - len(json.dumps(base, separators=(",", ":"))))
    base["pad"] = "x" * pad
    return json.dumps(base, separators=(",", ":"))


def run_floor(
    workers: Any,
    server: CoordServer,
    plan: list[tuple[str, int, set[int]]],
    real: list[Change],
    worker_of: dict[int, int],
    settle_s: float,
    measure: Callable[..., Change],
    log: Callable[[str], None],
) -> FloorResults:
    res = FloorResults()
    port = free_port()
    tls = server.state_dir / "tls"
    argv = [sys.executable, "-m", "bench.floor_server", "--port", str(port)]
    argv += ["--cert", str(tls / "server.pem"), "--key", str(tls / "server.key")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "floor ready":
            raise RuntimeError("the floor server did not start")
        n = len(worker_of)
        t = time.monotonic()
        workers.broadcast(("floor", "127.0.0.1", port), "streaming", 60)
        with httpx.Client(
            base_url=f"https://127.0.0.1:{port}", verify=server.ssl_context(), timeout=60
        ) as control:

            def held() -> int:
                return int(control.post("/prepare", json={"ids": []}).json()["held"])

            deadline = time.monotonic() + 60 + n / 50
            while held() < n or sum(s[2] for s in workers.broadcast(("stats",), "stats", 30)) < n:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the floor server holds {held()} of {n} streams")
                time.sleep(0.2)
            res.ready_s = time.monotonic() - t
            time.sleep(2)  # the last handshakes' aftermath (GC, client reads) dies down
            res.rss_mb = rss_mb(proc.pid)
            log(f"floor: {n} streams held after {res.ready_s:.1f} s, RSS {res.rss_mb:.0f} MB")
            for k, ((kind, target, expected), change) in enumerate(zip(plan, real, strict=True)):
                size = change.bytes // max(1, change.answers) - 8  # less the chunk framing
                control.post(
                    "/prepare", json={"ids": sorted(expected), "line": line_of(target, size)}
                )

                def fire() -> None:
                    control.post("/fire").raise_for_status()

                floor = measure(
                    workers, [proc.pid], 1000 + k, kind, target, expected, worker_of, fire, settle_s
                )
                res.changes.append(floor)
                log(
                    f"floor change {k} ({kind}): {floor.woke}/{floor.expected} in "
                    f"{floor.fanout_s * 1000:.0f} ms (real {change.fanout_s * 1000:.0f} ms: "
                    f"{change.fanout_s / floor.fanout_s:.2f}x)"
                )
        workers.broadcast(("halt",), "halted", 60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # by PID: the process this run started
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
    return res
