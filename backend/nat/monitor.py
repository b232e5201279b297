"""`NatMonitor`: keeps `kind` (shown in status as `nat`) current. It probes the echoes of every
server URL's host (both `ECHO_PORTS`) when the servers or this host's addresses change (a
laptop that moved to another network), and every `REPROBE_S` anyway (NATs change too).

It watches this host's addresses every `CHECK_S` for that, so it also tells the backend at once
when they change (`on_moved`): the new endpoints are then reported without waiting for the next
periodic check, and WireGuard's sockets forget the old source address. Likewise it resolves the
servers' names every `CHECK_S`: when a name's address changes (a home with a dynamic address),
`on_servers_moved` lets the long poll give up its connection to the old address at once."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from pcloud.backend.endpoints import host_ipv4_addresses
from pcloud.backend.nat.kind import classify
from pcloud.backend.nat.probe import Target, probe
from pcloud.server.protocol import ECHO_PORTS
from pcloud.shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CHECK_S = 2.0
REPROBE_S = 60.0


async def resolve_hosts(urls: list[str]) -> dict[str, tuple[str, ...]]:
    """Each URL host's IPv4 addresses (names resolved now; a failed lookup gives none)."""
    loop = asyncio.get_running_loop()
    out: dict[str, tuple[str, ...]] = {}
    for url in urls:
        host = urlsplit(url).hostname
        if not host or host in out:
            continue
        try:
            ip = ipaddress.ip_address(host)
            out[host] = (str(ip),) if ip.version == 4 else ()
        except ValueError:
            try:
                infos = await loop.getaddrinfo(host, None, family=socket.AF_INET)
            except OSError:
                infos = []
            out[host] = tuple(sorted({str(info[4][0]) for info in infos}))
    return out


def echo_targets(resolved: dict[str, tuple[str, ...]]) -> list[Target]:
    """(IPv4, port) of every resolved server address's echo ports."""
    ips = sorted({ip for found in resolved.values() for ip in found})
    return [(ip, port) for ip in ips for port in ECHO_PORTS]


class NatMonitor:
    def __init__(
        self,
        servers: Callable[[], list[str]],
        on_change: Callable[[], None] = lambda: None,
        on_moved: Callable[[], Awaitable[None]] | None = None,
        interface: str = "",
    ) -> None:
        # Our WireGuard interface's own address (it appears after the first check) is no move.
        self._interface = interface
        self._servers = servers
        self._on_change = on_change
        self._on_moved = on_moved
        self._local: tuple[str, ...] | None = None
        self._resolved: dict[str, tuple[str, ...]] = {}
        # Called with the server names whose addresses changed.
        self.on_servers_moved: Callable[[set[str]], None] | None = None
        self.kind: str | None = None  # None until the first probe
        self._last: tuple[object, ...] | None = None
        self._probed_at = 0.0
        self._moving: asyncio.Task[None] | None = None  # `on_moved` for the latest move(s)
        self._move_pending = False

    async def check(self) -> None:
        """Probe again if the servers or our addresses changed, or the last probe is old."""
        urls = sorted(set(self._servers()))
        found = await asyncio.to_thread(host_ipv4_addresses)
        local = sorted(ip for iface, ip in found if iface != self._interface and iface != "lo")
        if self._local is not None and tuple(local) != self._local and self._on_moved:
            log.info("this host's addresses changed: %s", ", ".join(local) or "(none)")
            self._follow_move()
        self._local = tuple(local)
        resolved = await resolve_hosts(urls)
        # A failed lookup (no addresses) is not a move: the last answer is kept.
        moved = {h for h, ips in resolved.items() if ips and self._resolved.get(h, ips) != ips}
        self._resolved.update({h: ips for h, ips in resolved.items() if ips})
        if moved and self.on_servers_moved:
            log.info("server name(s) resolve to other addresses now: %s", ", ".join(sorted(moved)))
            self.on_servers_moved(moved)
        targets = echo_targets(resolved)
        key = (tuple(targets), tuple(local))
        if key == self._last and time.monotonic() - self._probed_at < REPROBE_S:
            return
        seen, port = await probe(targets)
        kind = classify(seen, local, port)
        self._last, self._probed_at = key, time.monotonic()
        if kind != self.kind:
            log.info("NAT: %s (echoes saw %s)", kind, sorted(set(seen.values())) or "nothing")
            self.kind = kind
            self._on_change()

    def _follow_move(self) -> None:
        """Run `on_moved` beside the checks: reporting the new endpoints can wait out the old
        network's dead connections for seconds (CI saw 15 s), and the probe of the new NAT
        must not wait behind it (status showed the old NAT kind meanwhile). Moves that come
        while it runs are followed once more after it, never concurrently."""
        self._move_pending = True
        if self._moving is None or self._moving.done():
            self._moving = asyncio.get_running_loop().create_task(self._moves())

    async def _moves(self) -> None:
        assert self._on_moved is not None
        while self._move_pending:
            self._move_pending = False
            try:
                await self._on_moved()
            except OSError as exc:
                log.warning("after an address change: %s", exc)

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.check()
                except OSError as exc:
                    log.warning("NAT probe failed (will retry): %s", exc)
                await asyncio.sleep(CHECK_S)  # a period, not synchronisation
        finally:
            if self._moving is not None:
                await cancel_and_wait(self._moving)
