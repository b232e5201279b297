"""Housekeeping while up: renew the node token in time, report our endpoints when they change,
rotate peer endpoint candidates that do not answer, and retry a packet filter that could not be
installed. Fast (1 s) only while some peer is still without a handshake."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from pcloud.backend.config import BackendSettings
from pcloud.backend.control.client import ControlError, ControlUnreachable
from pcloud.backend.endpoints import host_ipv4_interfaces, local_endpoints, local_networks
from pcloud.backend.local.engine import Engine
from pcloud.backend.local.session import Session
from pcloud.backend.nat.advertise import resolve_advertised
from pcloud.backend.wg.driver import DriverError
from pcloud.server.protocol import Netmap

log = logging.getLogger(__name__)


class Housekeeping:
    """The loop, and what it remembers between rounds."""

    def __init__(
        self,
        settings: BackendSettings,
        session: Session,
        engine: Engine,
        *,
        netmap: Callable[[], Netmap | None],
        apply: Callable[[], Awaitable[None]],
    ) -> None:
        self.settings, self.session, self.engine = settings, session, engine
        self._netmap, self._apply = netmap, apply
        self.reported: list[str] | None = None  # the endpoints the server has from us
        self._local_nets: list[ipaddress.IPv4Network] = []  # tried first among candidates

    async def run(self) -> None:
        while True:
            node = self.session.node
            if node is not None and (node.renew_at or 0) <= time.time():
                await self.session.renew_token()
            try:
                await self.check_endpoints()
                await self.check_candidates()
                if self.engine.filter.failed and self._netmap() is not None:
                    await self._apply()  # e.g. nftables installed since: the tunnels follow
            except DriverError as e:
                log.warning("reading WireGuard state failed: %s", e)
            pending = self.engine.selector.pending()
            await asyncio.sleep(1.0 if pending else self.settings.endpoint_check_s)

    def networks(self) -> list[ipaddress.IPv4Network]:
        """This host's networks as last read (by `local_networks` or an endpoint check)."""
        return self._local_nets

    async def local_networks(self) -> list[ipaddress.IPv4Network]:
        """This host's networks (their candidates are tried first), found once if not yet."""
        if not self._local_nets:
            found = await asyncio.to_thread(host_ipv4_interfaces)
            self._local_nets = local_networks(found, self.settings.interface)
        return self._local_nets

    async def check_endpoints(self) -> None:
        node, control = self.session.node, self.session.control
        if node is None or control is None:
            return
        port = await self.engine.driver.listen_port()
        if not port:
            return
        interfaces = await asyncio.to_thread(host_ipv4_interfaces)
        self._local_nets = local_networks(interfaces, self.settings.interface)
        addrs = [(iface, cidr.partition("/")[0]) for iface, cidr in interfaces]
        endpoints = local_endpoints(addrs, port, self.settings.interface)
        if self.settings.advertise_endpoint:  # a name is resolved again at every check
            advertised = await resolve_advertised(self.settings.advertise_endpoint)
            if advertised and advertised not in endpoints:
                endpoints.append(advertised)
        if endpoints == self.reported:
            return
        try:
            await control.put_endpoints(self.session.current_server(), node.node_token, endpoints)
        except (ControlError, ControlUnreachable) as e:
            log.warning("reporting endpoints failed (will retry): %s", e)
            return
        self.reported = endpoints
        log.info("reported endpoints %s", ", ".join(endpoints) or "(none)")

    async def check_candidates(self) -> None:
        netmap = self._netmap()
        if netmap is None or not self.engine.up:
            return
        stats = self.engine.relay.direct_stats(await self.engine.driver.stats())
        if self.engine.selector.update(
            netmap.peers, stats, time.monotonic(), datetime.now(UTC), self._local_nets
        ):
            await self._apply()
