"""Wires the relay into the coordination server's app: the forwarding table, its routes and
metrics at build time, the UDP socket in the app's lifespan."""

from __future__ import annotations

import ipaddress

from fastapi import FastAPI

from ..config import Settings
from . import routes
from .core import Relay
from .metrics import RelayCollector
from .udp import RelaySocket as RelaySocket
from .udp import start_udp


def udp_port(settings: Settings) -> int:
    if settings.relay_port is not None:
        return settings.relay_port
    return settings.listen[0].port if settings.listen else 0


def attach(app: FastAPI, settings: Settings, shared: Relay | None = None) -> Relay:
    """The app's relay (`shared`: the admin socket's app shows the main app's counters)."""
    relay = shared or Relay(app.state.pcloud, app.state.accounts.proofs, settings.hostname)
    app.state.relay = relay
    app.state.relay_udp_port = udp_port(settings)
    app.state.relay_port_follows = settings.relay_port is None  # see advertised_port
    app.include_router(routes.router)
    app.state.metrics.registry.register(RelayCollector(relay))
    return relay


async def start(app: FastAPI) -> list[RelaySocket]:
    settings: Settings = app.state.settings
    port = udp_port(settings)
    if not port:
        return []
    hosts = sorted({lst.host for lst in settings.listen})
    if any(ipaddress.ip_address(h).is_unspecified for h in hosts):
        hosts = ["0.0.0.0"]
    return await start_udp(app.state.relay, hosts, port)


def stop(sockets: list[RelaySocket]) -> None:
    for sock in sockets:
        sock.close()
