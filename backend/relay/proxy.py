"""The local end of a relayed peer: a UDP socket on 127.0.0.1 that is the peer's WireGuard
endpoint. What WireGuard sends there goes to the relay addressed to the peer's key; what the
relay brings from that key is sent from there to WireGuard's own port, so WireGuard (kernel or
wireguard-go) sees one ordinary UDP peer.

Every relayed packet crosses this socket, so it is read in a tight loop per wake-up (asyncio's
datagram transport reads one datagram per event-loop pass), by runs (`pcloud.shared.udpgso`:
wireguard-go sends runs of equal-sized packets), and a run goes out as one run of SEND frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from pcloud.server.protocol import relay as wire
from pcloud.shared.udpgso import MAX_SEGMENTS, READS_PER_WAKE, RUN_BUFFER, Offload, big_buffers

LOOPBACK = "127.0.0.1"
HEADER = wire.HEADER_LEN
# (destination key, a run of whole SEND frames, the size of each but the last, which may be
# shorter; a view valid only during the call)
SendFrames = Callable[[bytes, memoryview, int], None]


class PeerProxy:
    def __init__(self, key: bytes, wg_port: int, out: SendFrames) -> None:
        self.key, self.wg_port, self._send = key, wg_port, out
        self._wg = (LOOPBACK, wg_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.setblocking(False)
        big_buffers(self.sock)
        self.port: int = self.sock.getsockname()[1]
        self._io = Offload(self.sock)
        self._in = memoryview(bytearray(RUN_BUFFER))
        self._header = bytes((wire.SEND,)) + key
        self._out = memoryview(bytearray(RUN_BUFFER + MAX_SEGMENTS * HEADER))
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._drain)
        self._closed = False

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _drain(self) -> None:
        """Every packet WireGuard sent since the last wake-up, behind its frame header, sent on
        in runs of equal-sized frames: one sendmsg a run (wireguard-go before 2023 sends one
        datagram a call; a newer one sends runs, read here in one call)."""
        recv, got, frames, header, wg = self._io.recv, self._in, self._out, self._header, self._wg
        size = w = count = 0  # the run being gathered: frame size, bytes, frames
        closed = False  # its last frame is short: nothing may follow it
        try:
            for _ in range(READS_PER_WAKE):
                try:
                    n, seg, addr = recv(got)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:  # an ICMP error of an earlier send (WireGuard restarting)
                    continue
                # Only WireGuard's own socket speaks to us; anything else on the host is ignored.
                if addr != wg or not n:
                    continue
                k = -(-n // seg)  # datagrams in it
                full = count + k > MAX_SEGMENTS or w + n + k * HEADER > len(frames)
                if w and (closed or full or seg + HEADER != size):
                    self._send(self.key, frames[:w], size)
                    w = count = 0
                size, count, closed = seg + HEADER, count + k, n % seg != 0
                for off in range(0, n, seg):
                    end = min(off + seg, n)
                    frames[w : w + HEADER] = header
                    frames[w + HEADER : w + HEADER + end - off] = got[off:end]
                    w += HEADER + end - off
        finally:
            if w:
                self._send(self.key, frames[:w], size)

    def deliver(self, packets: memoryview, size: int) -> None:
        """A run of WireGuard packets of `size` bytes (the last may be shorter) to WireGuard."""
        with contextlib.suppress(OSError):  # WireGuard gone: dropped
            self._io.send(packets, size, self._wg)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()


async def open_proxy(key: bytes, wg_port: int, out: SendFrames) -> PeerProxy:
    return PeerProxy(key, wg_port, out)
