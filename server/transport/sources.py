"""Open connections per source, so one address cannot take every file descriptor.

A source is an IPv4 address or an IPv6 /64 (one subscriber usually holds a whole /64, so
counting single IPv6 addresses would not limit anyone). IPv4-mapped IPv6 peers count as their
IPv4 address. Unix-socket peers have no address and are not counted.
"""

from __future__ import annotations

import ipaddress
from typing import Any


def source_of(peername: Any) -> str | None:
    """The key a connection from `peername` (a transport's "peername") counts under."""
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return None
    host = peername[0]
    if ":" not in host:
        return host  # IPv4: the address is the source (the common case, no parsing)
    try:
        addr = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(ipaddress.IPv6Network((addr, 64), strict=False))


class SourceGate:
    """Counts open connections per source; `admit` refuses one past `cap` (0: no cap)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.counts: dict[str, int] = {}
        self.refused = 0

    def admit(self, source: str) -> bool:
        held = self.counts.get(source, 0)
        if self.cap and held >= self.cap:
            self.refused += 1
            return False
        self.counts[source] = held + 1
        return True

    def release(self, source: str) -> None:
        held = self.counts.get(source, 0) - 1
        if held > 0:
            self.counts[source] = held
        else:
            self.counts.pop(source, None)
