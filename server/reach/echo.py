"""The UDP "what is my address" echo: each request is answered with the source address:port it
came from (wire format in `pcloud.server.protocol.reach`), so a backend learns how its NAT maps
one socket towards different destinations."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import cast

from ..protocol import ECHO_PORTS, echo_answer

log = logging.getLogger("pcloud.server.reach")


class _Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not a subclass of asyncio's, only alike.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        answer = echo_answer(data, addr)
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)


async def start_echo(
    hosts: list[str], ports: tuple[int, ...] = ECHO_PORTS
) -> list[asyncio.DatagramTransport]:
    """Listen on every host x port; a port that cannot be bound is logged and skipped (the
    server works without the echo: backends then say the NAT kind is unknown)."""
    loop = asyncio.get_running_loop()
    out = []
    for host in hosts:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for port in ports:
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    _Echo, local_addr=(host, port), family=family
                )
            except OSError as exc:
                log.warning("address echo: cannot listen on %s port %d/udp: %s", host, port, exc)
                continue
            out.append(transport)
    if out:
        log.info("address echo on %s, UDP ports %s", ", ".join(hosts), ports)
    return out
