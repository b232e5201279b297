"""EventBus: fan-out, bounded queues, unsubscribe."""

from __future__ import annotations

from pcloud.backend.events import Event, EventBus


async def test_publish_reaches_every_subscriber_and_drops_oldest() -> None:
    bus = EventBus(queue_size=2)
    async with bus.subscribe() as a, bus.subscribe() as b:
        assert bus.subscriber_count == 2
        for i in range(3):
            bus.publish(Event("status", {"i": i}))
        assert [a.get_nowait().data["i"] for _ in range(2)] == [1, 2]
        assert b.qsize() == 2
    assert bus.subscriber_count == 0
    bus.publish(Event("status", {}))  # nobody listening: no error
