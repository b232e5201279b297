"""Prometheus metrics of the coordination server, in a registry of its own per app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from .state import State


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.nodes = Gauge("pcloud_nodes", "registered nodes", registry=self.registry)
        self.online = Gauge(
            "pcloud_nodes_online", "nodes holding a long poll", registry=self.registry
        )
        self.waiting = Gauge(
            "pcloud_long_polls_waiting", "long polls waiting for a change", registry=self.registry
        )
        self.fanned_out = Gauge(
            "pcloud_changes_fanned_out",
            "per-node change records delivered to long polls since start",
            registry=self.registry,
        )
        self.version = Gauge(
            "pcloud_state_version", "state version counter", registry=self.registry
        )
        self.store_endpoints = Gauge(
            "pcloud_store_endpoint",
            "1 for each etcd endpoint this server uses (the cluster's members)",
            ["endpoint"],
            registry=self.registry,
        )
        self.requests = Counter(
            "pcloud_http_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "pcloud_http_request_seconds",
            "request latency (long polls excluded)",
            ["route"],
            registry=self.registry,
        )

    def refresh(self, state: State) -> None:
        self.nodes.set(len(state.nodes))
        self.online.set(len(state.online))
        self.waiting.set(state.bus.waiting)
        self.fanned_out.set(state.bus.fanned_out)
        self.version.set(state.store_version)
        gateway = getattr(state.store, "gateway", None)
        if gateway is not None:
            self.store_endpoints.clear()
            for url in gateway.endpoints:
                self.store_endpoints.labels(url).set(1)
