"""UDP segmentation offload (Linux): a run of datagrams per system call, for the relay's hot path.

With UDP_GRO a socket reads a run of datagrams from one source, all of one size but the last,
as one buffer, and a control message gives that size; with UDP_SEGMENT one sendmsg sends a
buffer as datagrams of a given size. wireguard-go does both on its own socket, and a run sent
this way stays one buffer through loopback, veth pairs, bridges and NAT until a socket splits
it, so the relay's three hops pay their per-datagram costs (wake-up, system call, netfilter)
once a run instead of once a packet. Where the kernel or the device cannot (GSO needs checksum
offload), a send falls back to one datagram a call for good; a read is then a single datagram.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import Any

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS
# Reads per wake-up at most when a socket is drained in a loop, so the loop's other work runs.
READS_PER_WAKE = 256
MAX_RUN = 65_000  # bytes per send: an IPv4 datagram carries at most 65,507 bytes of UDP payload
RUN_BUFFER = 65_536  # the largest run the kernel coalesces (64 KiB)
_CMSG_SPACE = socket.CMSG_SPACE(4)
SOCKET_BUFFER = 4 * 1024 * 1024  # bursts of a fast tunnel wait here, not in drops


def big_buffers(sock: socket.socket) -> None:
    """Larger socket buffers (the kernel caps them at net.core.[rw]mem_max)."""
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:
            pass  # the default size: slower, not wrong


class Offload:
    """A non-blocking UDP socket read and written by runs. `recv` and `send` raise what the
    socket raises, except that a full send buffer drops the run (as the wire would)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.gso = True
        try:
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        except OSError:
            pass  # an old kernel: single datagrams

    def recv(self, buf: memoryview) -> tuple[int, int, Any]:
        """(bytes read, the size of each datagram in them, source address)."""
        n, ancdata, _flags, addr = self.sock.recvmsg_into([buf], _CMSG_SPACE)
        for level, kind, data in ancdata:
            if level == SOL_UDP and kind == UDP_GRO:
                seg = int.from_bytes(data[:4], sys.byteorder)  # a C int
                return n, seg if 0 < seg < n else n, addr
        return n, n, addr

    def send(self, data: memoryview, seg: int, addr: Any = None) -> None:
        """`data` as datagrams of `seg` bytes (the last may be shorter), to `addr` (None: the
        connected peer)."""
        sock, size = self.sock, len(data)
        if size <= seg or not self.gso:
            for off in range(0, size, seg):
                self._one(data[off : off + seg], addr)
            return
        per = max(1, min(MAX_SEGMENTS, MAX_RUN // seg)) * seg
        cmsg = [(SOL_UDP, UDP_SEGMENT, seg.to_bytes(2, sys.byteorder))]
        for off in range(0, size, per):
            chunk = data[off : off + per]
            try:
                if addr is None:
                    sock.sendmsg([chunk], cmsg)
                else:
                    sock.sendmsg([chunk], cmsg, 0, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno not in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT):
                    raise
                self.gso = False  # no segmentation offload on this path: one at a time
                self.send(data[off:], seg, addr)
                return

    def _one(self, data: memoryview, addr: Any) -> None:
        try:
            if addr is None:
                self.sock.send(data)
            else:
                self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            pass
