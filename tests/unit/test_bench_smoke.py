"""A tiny run of the fan-out benchmark (bench/server_fanout.py), so CI proves it still works.

20 nodes over 4 users and 2 server-role nodes, one change of each kind, on SQLite and (when
etcd-server is installed) on a one-member etcd: the figures are not checked (they belong to the
full run), only that the run completes and that each change woke exactly the long polls it
affects.
"""

from __future__ import annotations

import math
import shutil

import pytest

from bench.server_fanout import Config, Results, report, run


def check_small_run(res: Results) -> None:
    assert res.client_errors == 0, res.last_client_error
    assert res.reg_rate > 0 and res.rss_polls_mb > 0
    kinds = [c.kind for c in res.changes]
    assert kinds == ["client", "server"]
    client, server = res.changes
    # Default policy: a client's change reaches its user's 4 other devices and the 2 servers;
    # a server-role node's change reaches the 19 other nodes.
    assert (client.expected, server.expected) == (6, 19)
    for change in res.changes:
        assert change.missing == 0 and change.unexpected == 0, change
        assert change.woke == change.expected
        assert not math.isnan(change.fanout_s) and change.bytes > 0
    assert f"fanout store={res.store} nodes=20" in report(res)
    if res.floor is None:
        return
    # The floor server got the same changes, to exactly the same nodes.
    assert len(res.floor.changes) == len(res.changes)
    for floor, change in zip(res.floor.changes, res.changes, strict=True):
        assert (floor.woke, floor.unexpected) == (change.woke, 0)


def test_fanout_benchmark_small_run() -> None:
    res = run(Config(nodes=20, users=4, servers=2, changes=1, procs=2), log=lambda _: None)
    check_small_run(res)
    assert res.store == "sqlite" and res.etcd_members == 0


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed")
def test_fanout_benchmark_small_run_on_etcd() -> None:
    # One etcd member on 127.0.0.2, started and stopped (by PID) by the run itself.
    cfg = Config(nodes=20, users=4, servers=2, changes=1, procs=2, store="etcd", floor=False)
    res = run(cfg, log=lambda _: None)
    check_small_run(res)
    assert res.store == "etcd" and res.etcd_members == 1 and res.etcd_rss_mb > 0


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed")
def test_fanout_benchmark_three_servers_on_etcd() -> None:
    # Three pcloud-servers on one etcd member share the nodes; the changes go through the first
    # and must reach exactly the affected nodes on all three.
    cfg = Config(
        nodes=20, users=4, servers=2, changes=1, procs=2, store="etcd", floor=False, coord_servers=3
    )
    res = run(cfg, log=lambda _: None)
    check_small_run(res)
    assert res.coord_servers == 3 and [f.nodes for f in res.per_server] == [8, 6, 6]
    for change in res.changes:
        assert [s.server for s in change.servers] == [0, 1, 2]
        assert sum(s.woke for s in change.servers) == change.expected
        # Every server's nodes heard of it, not only server 0's.
        assert all(s.woke > 0 and s.missing == 0 and s.unexpected == 0 for s in change.servers)
