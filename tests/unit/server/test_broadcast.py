"""The per-node change logs behind the long poll: deltas, trimming, waiters."""

from __future__ import annotations

import asyncio

from pcloud.server.netmap.broadcast import LOG_LIMIT, Broadcaster


def test_delta_folds_changes_and_removals_after_since() -> None:
    bus = Broadcaster(10)
    bus.track(1, 10)
    bus.record(11, 1, changed=(2, 3))
    bus.record(12, 1, removed=(2,))
    bus.record(13, 1, changed=(2,), self_changed=True)
    d = bus.delta(1, 10)
    assert d.changed == {2, 3} and d.removed == set() and d.self_changed
    d = bus.delta(1, 11)
    assert d.changed == {2} and d.removed == set() and d.self_changed
    d = bus.delta(1, 12)
    assert d.changed == {2} and not d.removed
    assert bus.delta(1, 13).empty() and not bus.has_news(1, 13) and bus.has_news(1, 12)
    assert bus.can_delta(1, 10, 13) and not bus.can_delta(1, 9, 13)
    assert not bus.can_delta(1, 14, 13)  # a version from the future: full map


def test_trimmed_log_refuses_versions_it_no_longer_reaches() -> None:
    bus = Broadcaster(0)
    bus.track(1, 0)
    last = 3 * LOG_LIMIT
    for v in range(1, last + 1):
        bus.record(v, 1, changed=(1000 + v,))
    assert not bus.can_delta(1, 0, last)
    oldest = min(v for v in range(last + 1) if bus.can_delta(1, v, last))
    # Whatever the log still accepts, it answers completely.
    assert bus.delta(1, oldest).changed == {1000 + v for v in range(oldest + 1, last + 1)}
    # One change touching many peers at once may straddle the cut.
    bus.record(last + 1, 1, changed=range(5000, 5000 + 3 * LOG_LIMIT))
    assert not bus.can_delta(1, last, last + 1)
    assert bus.can_delta(1, last + 1, last + 1)


async def test_waiters_wake_on_change_removal_and_timeout() -> None:
    bus = Broadcaster(0)
    bus.track(1, 0)
    bus.track(2, 0)
    assert await bus.wait(1, 0.01) is False
    woke = asyncio.ensure_future(bus.wait(1, 5))
    gone = asyncio.ensure_future(bus.wait(2, 5))
    await asyncio.sleep(0)
    assert bus.waiting == 2
    bus.record(1, 1, changed=(2,))
    bus.forget(2)
    assert await woke is True and await gone is True
    assert bus.waiting == 0
    assert await bus.wait(3, 5) is False  # never tracked: nothing to wait for
