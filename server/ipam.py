"""Overlay address allocation over the network CIDR.

The first host address is kept for the first server-role node (10.0.0.1 in the default network),
and a reserve of the last free addresses for later server-role nodes (clients cannot fill the
network for servers); everything else gets the lowest free address. Freed addresses are reused (lowest first) only after
a node is deleted. Allocation is O(log n) with a heap of freed slots and a high-water mark, so
registering the 10,000th node costs the same as the first.
"""

from __future__ import annotations

import heapq
import ipaddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Exhausted(Exception):
    pass


class Ipam:
    def __init__(self, network: IPNetwork, used: list[str]) -> None:
        self.network = network
        base = int(network.network_address)
        # Host offsets 1 .. last usable (IPv4 excludes network and broadcast addresses).
        self._first = 1
        self._last = network.num_addresses - (2 if network.version == 4 else 1)
        self._base = base
        self._used: set[int] = set()
        for addr in used:
            self._used.add(int(ipaddress.ip_address(addr)) - base)
        self._next = max([self._first + 1, *(u + 1 for u in self._used)])
        self._free = [i for i in range(self._first + 1, self._next) if i not in self._used]
        heapq.heapify(self._free)

    def first_host(self) -> str:
        return str(ipaddress.ip_address(self._base + self._first))

    def _addr(self, offset: int) -> str:
        return str(ipaddress.ip_address(self._base + offset))

    def free(self) -> int:
        """Addresses not handed out (the first-server slot included)."""
        return self._last - self._first + 1 - len(self._used)

    def allocate(self, *, server: bool, reserve: int = 0) -> str:
        """The lowest free address. A client never takes the last `reserve` free addresses nor
        the first-server slot: they stay for server-role nodes, so a network that clients
        filled can still grow its control plane."""
        if server and self._first not in self._used:
            self._used.add(self._first)
            return self._addr(self._first)
        if not server:
            # At most a quarter of the network is kept, so a tiny test network still takes clients.
            kept = min(reserve, (self._last - self._first + 1) // 4)
            kept += self._first not in self._used
            if self.free() <= kept:
                raise Exhausted(
                    f"network {self.network} has no free address left for clients "
                    f"({self.free()} kept for server-role nodes): remove unused devices or "
                    "start the network with a larger --network"
                )
        while self._free:
            off = heapq.heappop(self._free)
            if off not in self._used:
                self._used.add(off)
                return self._addr(off)
        if self._next <= self._last:
            off = self._next
            self._next += 1
            self._used.add(off)
            return self._addr(off)
        if self._first not in self._used:
            # Only the first-server slot is left: a later server may have it rather than fail.
            self._used.add(self._first)
            return self._addr(self._first)
        raise Exhausted(f"network {self.network} has no free address left")

    def mark(self, addr: str) -> None:
        """Take `addr` as used: another server handed it out, or an orphan claim holds it."""
        off = int(ipaddress.ip_address(addr)) - self._base
        if not self._first <= off <= self._last or off in self._used:
            return
        self._used.add(off)
        if off >= self._next:
            # Slots skipped over stay allocatable (the heap skips used entries lazily).
            for skipped in range(self._next, off):
                heapq.heappush(self._free, skipped)
            self._next = off + 1

    def release(self, addr: str) -> None:
        off = int(ipaddress.ip_address(addr)) - self._base
        if off in self._used:
            self._used.discard(off)
            if off != self._first:
                heapq.heappush(self._free, off)

    def prefixlen(self) -> int:
        return self.network.prefixlen
