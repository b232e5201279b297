"""The relay's UDP socket: a non-blocking socket read in a tight loop on each wake-up.

asyncio's datagram transport reads one datagram per event-loop pass, and the relay then parses
the frame into new objects and builds the answer by concatenation: ~11-25 us of CPU a frame,
which capped relayed throughput (bench.relay_throughput). Here one wake-up drains up to
`BATCH` datagrams into one buffer; a SEND frame whose (source address, destination key) has a
valid cached `Route` (the pair `Relay.route` let through: both registered, policy allows) is
rewritten in place into the RECV frame (kind byte and source key; the WireGuard packet is not
touched) and sent from the same buffer. Everything else, and every cache miss, takes `Relay`'s
checked path, which decides and counts drops; the cache only remembers its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time

from ..protocol import relay as wire
from .core import Addr, Relay, Route, Sink

log = logging.getLogger("pcloud.server.relay")

SOCKET_BUFFER = 4 * 1024 * 1024  # bursts of a fast tunnel wait here, not in drops
BATCH = 256  # datagrams per wake-up at most, so the rest of the server's loop still runs
MAX_ROUTES = 65_536  # the route cache is cleared past this (bounded memory)
HEADER = 1 + wire.KEY_LEN


def big_buffers(sock: socket.socket) -> None:
    """Larger socket buffers (the kernel caps them at net.core.[rw]mem_max)."""
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)


class RelaySocket:
    """One bound relay socket, read by the loop's reader callback."""

    def __init__(self, relay: Relay, sock: socket.socket) -> None:
        self.relay, self.sock = relay, sock
        self._buf = bytearray(wire.MAX_FRAME + 1)  # + 1: a datagram that fills it is too large
        self._view = memoryview(self._buf)
        self._routes: dict[tuple[object, bytes], Route] = {}
        self._sinks: dict[Addr, Sink] = {}
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._drain)

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _sink(self, addr: Addr) -> Sink:
        # One bound sender per registered address, for answers and the checked path.
        sink = self._sinks.get(addr)
        if sink is None:
            sock = self.sock

            def sink(payload: bytes) -> None:
                with contextlib.suppress(OSError):  # a full buffer or a gone route: dropped
                    sock.sendto(payload, addr)

            if len(self._sinks) > MAX_ROUTES:
                self._sinks.clear()
            self._sinks[addr] = sink
        return sink

    def _drain(self) -> None:
        sock, buf, view, relay, routes = self.sock, self._buf, self._view, self.relay, self._routes
        state, take, send_kind, recv_kind = relay.state, relay.take, wire.SEND, wire.RECV
        now = time.monotonic()
        forwarded = nbytes = 0
        try:
            for _ in range(BATCH):
                try:
                    n, addr = sock.recvfrom_into(buf)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as e:  # an ICMP error of an earlier send: the node went away
                    log.debug("relay socket: %s", e)
                    continue
                if n <= HEADER or n > wire.MAX_FRAME or buf[0] != send_kind:
                    self._checked(n, addr)
                    continue
                key = (addr, bytes(view[1:HEADER]))
                route = routes.get(key)
                if route is None or not route.valid(now, state.version):
                    route = relay.route_from((addr[0], addr[1]), key[1], now)
                    if route is None:
                        continue
                    if len(routes) >= MAX_ROUTES:
                        routes.clear()
                    routes[key] = route
                if not take(route.src, now):
                    relay.dropped["rate"] += 1
                    continue
                buf[0] = recv_kind
                buf[1:HEADER] = route.src_key
                dst = route.dst
                if dst.sock is sock:
                    with contextlib.suppress(OSError):  # a full buffer: dropped like the wire
                        sock.sendto(view[:n], dst.addr)  # type: ignore[arg-type]
                else:  # over a WebSocket or another relay socket
                    dst.sink(bytes(view[:n]))
                forwarded += 1
                nbytes += n - HEADER
        finally:
            relay.forwarded += forwarded
            relay.forwarded_bytes += nbytes

    def _checked(self, n: int, addr: tuple[str, int]) -> None:
        """A hello, a malformed frame, anything else: the relay's full path."""
        src: Addr = (addr[0], addr[1])
        self.relay.on_datagram(bytes(self._view[:n]), src, self._sink(src), self.sock)


async def start_udp(relay: Relay, hosts: list[str], port: int) -> list[RelaySocket]:
    """Bind the relay's UDP port on each listen host; a host that cannot bind is logged."""
    out = []
    for host in hosts:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            log.warning("relay: cannot bind UDP %s:%d: %s", host, port, e)
            continue
        sock.setblocking(False)
        big_buffers(sock)
        out.append(RelaySocket(relay, sock))
    if out:
        log.info("relay listening on UDP port %d", port)
    return out
