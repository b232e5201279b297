"""The local end of a relayed peer: a UDP socket on 127.0.0.1 that is the peer's WireGuard
endpoint. What WireGuard sends there goes to the relay addressed to the peer's key; what the
relay brings from that key is sent from there to WireGuard's own port, so WireGuard (kernel or
wireguard-go) sees one ordinary UDP peer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

LOOPBACK = "127.0.0.1"


class PeerProxy(asyncio.DatagramProtocol):
    def __init__(self, key: bytes, wg_port: int, out: Callable[[bytes, bytes], None]) -> None:
        self.key, self.wg_port, self._out = key, wg_port, out
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = self.transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # Only WireGuard's own socket speaks to us; anything else on the host is ignored.
        if addr[0] == LOOPBACK and addr[1] == self.wg_port:
            self._out(self.key, data)

    def deliver(self, packet: bytes) -> None:
        if self.transport is not None:
            self.transport.sendto(packet, (LOOPBACK, self.wg_port))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_proxy(key: bytes, wg_port: int, out: Callable[[bytes, bytes], None]) -> PeerProxy:
    loop = asyncio.get_running_loop()
    _, proxy = await loop.create_datagram_endpoint(
        lambda: PeerProxy(key, wg_port, out), local_addr=(LOOPBACK, 0)
    )
    return proxy
