"""The connection layer's pure parts: what a source is, the per-source count, the log limiter,
and trimming a node's waiting polls."""

from __future__ import annotations

import logging

import pytest

from pcloud.server.netmap.broadcast import Broadcaster
from pcloud.server.transport.ratelog import RateLimitedLog
from pcloud.server.transport.sources import SourceGate, source_of


def test_a_source_is_an_ipv4_address_or_an_ipv6_64() -> None:
    assert source_of(("192.0.2.7", 5555)) == "192.0.2.7"
    assert source_of(("2001:db8:1:2:aaaa::1", 5555, 0, 0)) == "2001:db8:1:2::/64"
    assert source_of(("2001:db8:1:2:ffff::9", 1, 0, 0)) == "2001:db8:1:2::/64"
    assert source_of(("::ffff:192.0.2.7", 1, 0, 0)) == "192.0.2.7"
    assert source_of("") is None and source_of(None) is None  # Unix sockets: not counted


def test_the_gate_refuses_past_the_cap_and_frees_on_release() -> None:
    gate = SourceGate(2)
    assert gate.admit("a") and gate.admit("a") and not gate.admit("a")
    assert gate.admit("b")
    gate.release("a")
    assert gate.admit("a") and gate.refused == 1
    for _ in range(3):
        gate.release("a")
    assert "a" not in gate.counts
    assert all(SourceGate(0).admit("a") for _ in range(5000))  # 0: no cap


def test_the_log_limiter_says_how_many_it_held_back(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr("pcloud.server.transport.ratelog.time.monotonic", lambda: now[0])
    warn = RateLimitedLog(logging.getLogger("t"), interval=10)
    with caplog.at_level(logging.WARNING):
        assert warn.warning("k", "bit %s", "x")
        assert not any(warn.warning("k", "bit %s", "x") for _ in range(5))
        assert warn.warning("other", "other kind")
        now[0] += 11
        assert warn.warning("k", "bit %s", "y")
    assert [r.getMessage() for r in caplog.records] == [
        "bit x",
        "other kind",
        "bit y (5 more like this in the last 11 s)",
    ]


async def test_trimming_answers_the_oldest_polls_as_timed_out() -> None:
    bus = Broadcaster(1)
    bus.track(7, 1)
    futs = [f for f in (bus.waiter(7) for _ in range(4)) if f is not None]
    assert bus.trim_waiters(7, 1) == 3
    # The three oldest are answered "no change" (False, as a timeout), the newest still waits.
    assert [f.result() for f in futs[:3]] == [False, False, False] and not futs[3].done()
    assert bus.trim_waiters(7, 1) == 0 and bus.trim_waiters(99, 0) == 0
