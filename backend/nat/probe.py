"""Ask the servers' UDP echoes where they see us, from ONE socket (so the answers compare how
the NAT maps that socket towards different destinations). Works the same under kernel WireGuard
and wireguard-go: the probe never touches WireGuard's own socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Sequence

from pcloud.server.protocol import echo_request, parse_echo_answer

Target = tuple[str, int]  # (IPv4 address, UDP port)
RESEND_S = 0.3


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, nonce: bytes, targets: Sequence[Target]) -> None:
        self.nonce = nonce
        self.targets = set(targets)
        self.seen: dict[Target, str] = {}
        self.done = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        source = (addr[0], addr[1])
        if source not in self.targets:
            return  # only answers from where we asked
        seen = parse_echo_answer(data, self.nonce)
        if seen is not None:
            self.seen[source] = seen
            if len(self.seen) == len(self.targets):
                self.done.set()


async def probe(targets: Sequence[Target], timeout: float = 1.5) -> tuple[dict[Target, str], int]:
    """Send an echo request to every target from one fresh socket (resending every
    `RESEND_S` to unanswered ones); ({target: "ip:port" it saw}, our local port)."""
    if not targets:
        return {}, 0
    loop = asyncio.get_running_loop()
    nonce = os.urandom(16)
    request = echo_request(nonce)
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _Collector(nonce, targets), local_addr=("0.0.0.0", 0), family=socket.AF_INET
    )
    try:
        port = int(transport.get_extra_info("sockname")[1])
        deadline = loop.time() + timeout
        while not proto.done.is_set() and loop.time() < deadline:
            for target in targets:
                if target not in proto.seen:
                    try:
                        transport.sendto(request, target)
                    except OSError:
                        pass  # no route from here: that target stays unanswered
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(RESEND_S, deadline - loop.time())):
                    await proto.done.wait()
        return dict(proto.seen), port
    finally:
        transport.close()
