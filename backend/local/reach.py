"""Reach from where this host is: the NAT's kind (for status) and what follows when the host
moved to another network or a server's name moved to another address (backend/nat).

A move rebinds wireguard-go's socket (the old source address is gone) and reports the new
endpoints at once; a server name that resolves elsewhere now makes the netmap stream give up
its connection to the old address instead of waiting out the keep-alive silence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from pcloud.backend.config import BackendSettings
from pcloud.backend.control.pinning import base_url
from pcloud.backend.control.stream import StreamPoller
from pcloud.backend.local.engine import Engine
from pcloud.backend.local.housekeeping import Housekeeping
from pcloud.backend.local.session import Session
from pcloud.backend.nat.kind import NO_ECHO
from pcloud.backend.nat.monitor import NatMonitor
from pcloud.backend.wg.driver import DriverError
from pcloud.server.protocol import Netmap

log = logging.getLogger(__name__)


class Reach:
    """The NAT monitor and the moves it reports."""

    def __init__(
        self,
        settings: BackendSettings,
        session: Session,
        engine: Engine,
        housekeeping: Housekeeping,
        *,
        netmap: Callable[[], Netmap | None],
        changed: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.session, self.engine, self.housekeeping = session, engine, housekeeping
        self._netmap = netmap
        self.monitor = NatMonitor(
            self._server_urls, changed, on_moved=self._moved, interface=settings.interface
        )
        # No echo answered: UDP is blocked here, so the relay goes over TCP at once.
        engine.relay.no_echo = lambda: self.monitor.kind == NO_ECHO

    @property
    def kind(self) -> str | None:
        return self.monitor.kind

    def follow(self, poller: StreamPoller) -> None:
        """Interrupt `poller` when the name of the server it reads resolves elsewhere."""
        self.monitor.on_servers_moved = lambda hosts: (
            poller.interrupt()
            if urlsplit(self.session.current_server()).hostname in hosts
            else None
        )

    async def run(self) -> None:
        await self.monitor.run()

    async def _moved(self) -> None:
        rebind = getattr(self.engine.driver, "rebind", None)  # wireguard-go only (backend/wg)
        try:
            if rebind is not None and self.engine.up:
                await rebind()
            await self.housekeeping.check_endpoints()
        except DriverError as e:
            log.warning("after an address change: %s", e)

    def _server_urls(self) -> list[str]:
        """Every coordination server URL we know (the NAT probe asks each one's echo)."""
        netmap, node = self._netmap(), self.session.node
        urls = list(netmap.servers) if netmap else []
        return urls + ([base_url(node.server_url)] if node else [])
