"""The relay's counters as Prometheus metrics (a collector reading `Relay.stats`)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .core import Relay


class RelayCollector(Collector):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self.relay.stats()
        yield GaugeMetricFamily(
            "pcloud_relay_registered", "nodes registered with this relay", value=s["registered"]
        )
        yield CounterMetricFamily(
            "pcloud_relay_forwarded_frames", "frames relayed", value=s["forwarded"]
        )
        yield CounterMetricFamily(
            "pcloud_relay_forwarded_bytes", "WireGuard bytes relayed", value=s["forwarded_bytes"]
        )
        dropped = CounterMetricFamily(
            "pcloud_relay_dropped_frames", "frames the relay dropped", labels=["reason"]
        )
        for key, value in s.items():
            if key.startswith("dropped_"):
                dropped.add_metric([key[len("dropped_") :]], value)
        yield dropped
