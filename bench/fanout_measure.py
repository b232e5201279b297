"""The fan-out benchmark's measured scenario: one change, and who received it when.

`measure_change` waits until the fleet is quiet, then `measure_window` opens every worker's
window, fires the change (here the node's `PUT /nodes/self/endpoints`), waits for the affected
nodes and a short settle for wrong extra wakes, and turns the workers' records into a `Change`.
bench.fanout_floor measures the floor server's writes through the same window.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import httpx

from .fanout_results import Change, Config, ServerShare
from .fanout_workers import Workers, metric
from .procfs import cpu_s


def wait_quiet(workers: Workers, clients: list[httpx.Client], n: int, timeout: float) -> None:
    """Until the servers (one metrics client each) hold `n` waiting polls between them and no
    answer arrived for a second."""
    deadline = time.monotonic() + timeout
    last_answers = -1
    quiet_since = time.monotonic()
    waiting = 0.0
    while time.monotonic() < deadline:
        stats = workers.broadcast(("stats",), "stats", 30)
        answers = sum(s[1] for s in stats)
        outstanding = sum(s[2] for s in stats)
        waiting = sum(metric(c, "pcloud_long_polls_waiting") for c in clients)
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
    metrics_clients: list[httpx.Client],
    pids: list[int],
    cfg: Config,
    k: int,
    kind: str,
    target: int,
    node_token: str,
    expected: set[int],
    worker_of: dict[int, int],
    server_of: dict[int, int] | None = None,
) -> Change:
    wait_quiet(workers, metrics_clients, cfg.nodes, timeout=60)

    def put() -> None:
        r = put_client.put(
            "/api/v1/nodes/self/endpoints",
            json={"endpoints": [f"198.19.0.1:{20000 + k}"]},
            headers={"Authorization": f"Bearer {node_token}"},
        )
        r.raise_for_status()

    return measure_window(
        workers, pids, k, kind, target, expected, worker_of, put, cfg.settle_s, server_of
    )


def measure_window(
    workers: Workers,
    pids: list[int],
    k: int,
    kind: str,
    target: int,
    expected: set[int],
    worker_of: dict[int, int],
    fire: Callable[[], None],
    settle_s: float,
    server_of: dict[int, int] | None = None,
) -> Change:
    """Open every worker's window, `fire` the change, and collect who got it when: over all
    the server processes `pids`, and per server too when `server_of` (node id -> index in
    `pids`) says which server holds each node's stream."""
    local: list[list[int]] = [[] for _ in workers.conns]
    for nid in expected:
        local[worker_of[nid]].append(nid)
    # Every worker has its window open before the change is sent.
    workers.call([("begin", k, target, ids) for ids in local], "begun", 30)
    cpu0 = [cpu_s(pid) for pid in pids]
    t0 = time.monotonic()
    fire()
    request_s = time.monotonic() - t0
    workers.wait_done(k, timeout=30)
    # Wrong extra wakes would arrive about as fast as the right ones: a short settle catches them.
    time.sleep(settle_s)
    server_cpu = [cpu_s(pid) - c for pid, c in zip(pids, cpu0, strict=True)]
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
    got = {n: t - t0 for n, t in got.items()}
    delays = list(got.values())
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
        server_cpu_s=sum(server_cpu),
        servers=[]
        if server_of is None
        else shares(got, unexpected, expected, server_of, server_cpu),
    )


def shares(
    got: dict[int, float],
    unexpected: set[int],
    expected: set[int],
    server_of: dict[int, int],
    server_cpu: list[float],
) -> list[ServerShare]:
    """One change split by the server holding each node's stream; times are still from the
    request sent (to one server) to the node's receipt."""
    out: list[ServerShare] = []
    for s, cpu in enumerate(server_cpu):
        mine = {n for n in expected if server_of.get(n) == s}
        delays = [t for n, t in got.items() if n in mine]
        out.append(
            ServerShare(
                server=s,
                expected=len(mine),
                woke=len(delays),
                unexpected=sum(1 for n in unexpected if server_of.get(n) == s),
                missing=len(mine) - len(delays),
                fanout_s=max(delays) if delays else math.nan,
                p50_s=statistics.median(delays) if delays else math.nan,
                server_cpu_s=cpu,
            )
        )
    return out
