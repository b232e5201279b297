"""The relay's UDP socket: an asyncio datagram endpoint that hands every datagram to `Relay`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any, cast

from .core import Addr, Relay

log = logging.getLogger("pcloud.server.relay")


SOCKET_BUFFER = 4 * 1024 * 1024  # bursts of a fast tunnel wait here, not in drops


def big_buffers(transport: asyncio.BaseTransport) -> None:
    """Larger socket buffers (the kernel caps them at net.core.[rw]mem_max)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)


class RelayDatagram(asyncio.DatagramProtocol):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.DatagramTransport | None = None
        self._sinks: dict[Addr, Any] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        big_buffers(self.transport)

    def _sink(self, addr: Addr) -> Any:
        # One bound sender per registered address: the forwarding path allocates nothing.
        sink = self._sinks.get(addr)
        if sink is None:
            transport = self.transport
            assert transport is not None

            def sink(payload: bytes) -> None:
                transport.sendto(payload, addr)

            if len(self._sinks) > 65_536:
                self._sinks.clear()
            self._sinks[addr] = sink
        return sink

    def datagram_received(self, data: bytes, addr: Any) -> None:
        src: Addr = (addr[0], addr[1])
        self.relay.on_datagram(data, src, self._sink(src))

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable from a node that went away: its registration simply expires.
        log.debug("relay socket: %s", exc)


async def start_udp(relay: Relay, hosts: list[str], port: int) -> list[asyncio.DatagramTransport]:
    """Bind the relay's UDP port on each listen host; a host that cannot bind is logged."""
    loop = asyncio.get_running_loop()
    out = []
    for host in hosts:
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: RelayDatagram(relay), local_addr=(host, port)
            )
        except OSError as e:
            log.warning("relay: cannot bind UDP %s:%d: %s", host, port, e)
            continue
        out.append(transport)
    if out:
        log.info("relay listening on UDP port %d", port)
    return out
