"""The local end of a relayed peer: a UDP socket on 127.0.0.1 that is the peer's WireGuard
endpoint. What WireGuard sends there goes to the relay addressed to the peer's key; what the
relay brings from that key is sent from there to WireGuard's own port, so WireGuard (kernel or
wireguard-go) sees one ordinary UDP peer.

Every relayed packet crosses this socket, so it is read in a tight loop per wake-up (asyncio's
datagram transport reads one datagram per event-loop pass), each packet straight into a buffer
whose first bytes already hold the SEND frame's header for this peer: the frame goes out as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from pcloud.server.protocol import relay as wire

LOOPBACK = "127.0.0.1"
BATCH = 256  # datagrams per wake-up at most, so the backend's other work still runs
SOCKET_BUFFER = 4 * 1024 * 1024  # a burst from WireGuard waits here (capped by rmem_max)
HEADER = 1 + wire.KEY_LEN
# (destination key, a whole SEND frame; valid only during the call)
SendFrame = Callable[[bytes, memoryview], None]


def big_buffers(sock: socket.socket) -> None:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)


class PeerProxy:
    def __init__(self, key: bytes, wg_port: int, out: SendFrame) -> None:
        self.key, self.wg_port, self._out = key, wg_port, out
        self._wg = (LOOPBACK, wg_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.setblocking(False)
        big_buffers(self.sock)
        self.port: int = self.sock.getsockname()[1]
        self._buf = bytearray(HEADER + wire.MAX_PACKET)
        self._buf[0] = wire.SEND
        self._buf[1:HEADER] = key
        self._view = memoryview(self._buf)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._drain)
        self._closed = False

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _drain(self) -> None:
        sock, view, out, key, wg = self.sock, self._view, self._out, self.key, self._wg
        packet = view[HEADER:]
        for _ in range(BATCH):
            try:
                n, addr = sock.recvfrom_into(packet)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error of an earlier send (WireGuard restarting)
                continue
            # Only WireGuard's own socket speaks to us; anything else on the host is ignored.
            if addr == wg:
                out(key, view[: HEADER + n])

    def deliver(self, packet: bytes | memoryview) -> None:
        with contextlib.suppress(OSError):  # a full buffer or WireGuard gone: dropped
            self.sock.sendto(packet, self._wg)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()


async def open_proxy(key: bytes, wg_port: int, out: SendFrame) -> PeerProxy:
    return PeerProxy(key, wg_port, out)
