"""The cluster's public URLs and the public address behind them.

A `--public-url` (the home router's address and the port it forwards to one server) is part of
that server's record in the store (`server:<hostname>`, field `public`), so every server knows
all of them: each server's leaf certificate names every public host (a client outside logs in
through whichever server a forward leads to), and netmaps list them with the servers' URLs.

When the public URL's host is a DNS name (a home with a dynamic address), `PublicAddress`
resolves it again every few seconds; when the address changes, the nodes whose public
candidate was derived from the old one (nodes behind the same home NAT) get the new one
(`readvertise`), which every peer sees in its next netmap.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

from ..protocol import public_host
from ..state import State
from .record import PUBLIC_FIELD

log = logging.getLogger("pcloud.server.reach")

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def cluster_public_urls(state: State) -> list[str]:
    """Every server's public URL: this server's own first, then the others' in name order."""
    urls = [state.settings.public_url] if state.settings.public_url else []
    for host in sorted(state.servers):
        for url in state.servers[host].get(PUBLIC_FIELD, []) or []:
            if isinstance(url, str) and url not in urls:
                urls.append(url)
    return urls


def public_cert_names(state: State) -> list[str]:
    """The hosts of the cluster's public URLs, for this server's leaf."""
    names = []
    for url in cluster_public_urls(state):
        try:
            names.append(public_host(url))
        except ValueError:
            log.warning("ignoring a malformed public URL in the store: %r", url)
    return names


def _literal(host: str | None) -> IP | None:
    try:
        return ipaddress.ip_address(host or "")
    except ValueError:
        return None


class PublicAddress:
    """The IP of `--public-url`'s host: fixed when it is an IP, re-resolved when a name."""

    def __init__(self, url: str | None) -> None:
        self.host = public_host(url) if url else None
        self.ip = _literal(self.host)
        self.is_name = self.host is not None and self.ip is None
        self._failing = False

    def current(self) -> IP | None:
        return self.ip

    async def refresh(self) -> tuple[IP | None, IP] | None:
        """Resolve the name again; (old, new) when the address changed. A failed lookup keeps
        the last address (a resolver hiccup is not a move)."""
        if not self.is_name or self.host is None:
            return None
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.host, None, type=socket.SOCK_DGRAM)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot resolve the public URL's host %s: %s", self.host, exc)
            self._failing = True
            return None
        self._failing = False
        found = [_literal(str(info[4][0])) for info in infos]
        addresses = [ip for ip in found if ip is not None]
        if not addresses or self.ip in addresses:
            return None
        old, self.ip = self.ip, addresses[0]
        log.info("public address of %s: %s (was %s)", self.host, self.ip, old or "unknown")
        return old, self.ip


async def readvertise(state: State, old: IP, new: IP) -> int:
    """Nodes whose public candidate (`observed`) is on `old` get the same port on `new`."""
    moved = 0
    for node in list(state.nodes.values()):
        host, _, port = (node.observed or "").rpartition(":")
        if not host or _literal(host.strip("[]")) != old:
            continue
        seen = f"[{new}]:{port}" if new.version == 6 else f"{new}:{port}"
        await state.update_node(
            node.id, endpoints=list(node.endpoints), observed=seen, by_self=True
        )
        moved += 1
    if moved:
        log.info("re-advertised %d node(s) from %s to %s", moved, old, new)
    return moved
