"""The relay's UDP socket: a non-blocking socket read in a tight loop on each wake-up.

asyncio's datagram transport reads one datagram per event-loop pass, and the relay then parsed
each frame into new objects and built the answer by concatenation: ~11-25 us of CPU a frame,
which capped relayed throughput (bench.relay_throughput). Here one wake-up drains up to
`READS_PER_WAKE` reads, each a run of equal-sized frames where the sender sent one
(`pcloud.shared.udpgso`: the backend's proxy gathers WireGuard's packets into runs). A SEND
frame whose (source address, destination key) has a valid cached `Route` (the pair
`Relay.route` let through: both registered, policy allows) is rewritten in place into the RECV
frame (kind byte and source key; the WireGuard packet is not touched) and consecutive frames to
one destination leave as one run. Everything else, and every cache miss, takes `Relay`'s
checked path, which decides and counts drops; the cache only remembers its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time

from pcloud.shared.udpgso import READS_PER_WAKE, RUN_BUFFER, Offload, big_buffers

from ..protocol import relay as wire
from .core import Addr, Relay, Route, Sink

log = logging.getLogger("pcloud.server.relay")

MAX_ROUTES = 65_536  # the route cache is cleared past this (bounded memory)
HEADER = wire.HEADER_LEN


class RelaySocket:
    """One bound relay socket, read by the loop's reader callback."""

    def __init__(self, relay: Relay, sock: socket.socket) -> None:
        self.relay, self.sock = relay, sock
        self._io = Offload(sock)
        self._view = memoryview(bytearray(RUN_BUFFER))
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
        recv, view, now = self._io.recv, self._view, time.monotonic()
        for _ in range(READS_PER_WAKE):
            try:
                n, seg, addr = recv(view)  # a run: frames of `seg` bytes, the last may be shorter
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # an ICMP error of an earlier send: the node went away
                log.debug("relay socket: %s", e)
                continue
            self._run(addr, n, seg, now)

    def _run(self, addr: tuple[str, int], n: int, seg: int, now: float) -> None:
        """The frames in view[:n], each `seg` bytes (the last may be shorter), from `addr`:
        SEND frames with a valid route rewritten into RECV in place and sent on in runs to
        their destination; anything else through the checked path."""
        view, relay, routes = self._view, self.relay, self._routes
        version = relay.state.version
        out_dst: Route | None = None  # the run being gathered: its route and extent
        out_start = out_end = 0
        forwarded = nbytes = 0
        dkey, route = b"", None
        try:
            for off in range(0, n, seg):
                end = min(off + seg, n)
                if end - off <= HEADER or end - off > wire.MAX_FRAME or view[off] != wire.SEND:
                    self._checked(view[off:end], addr)
                    continue
                key = bytes(view[off + 1 : off + HEADER])
                if key != dkey or route is None:
                    dkey, route = key, routes.get((addr, key))
                    if route is None or not route.valid(now, version):
                        route = relay.route_from((addr[0], addr[1]), key, now)
                        if route is not None:
                            if len(routes) >= MAX_ROUTES:
                                routes.clear()
                            routes[(addr, key)] = route
                if route is None:
                    continue
                if not relay.take(route.src, now):
                    relay.dropped["rate"] += 1
                    continue
                view[off] = wire.RECV
                view[off + 1 : off + HEADER] = route.src_key
                forwarded += 1
                nbytes += end - off - HEADER
                if out_dst is not None and (out_dst.dst is not route.dst or off != out_end):
                    self._send(out_dst, out_start, out_end, seg)
                    out_dst = None
                if out_dst is None:
                    out_dst, out_start = route, off
                out_end = end
            if out_dst is not None:
                self._send(out_dst, out_start, out_end, seg)
        finally:
            relay.forwarded += forwarded
            relay.forwarded_bytes += nbytes

    def _send(self, route: Route, start: int, end: int, seg: int) -> None:
        """The RECV frames in view[start:end] to the route's destination."""
        dst, frames = route.dst, self._view[start:end]
        if dst.sock is self.sock:
            try:
                self._io.send(frames, seg, dst.addr)
            except OSError as e:  # a route gone: dropped like the wire
                log.debug("relay socket: %s", e)
        else:  # over a WebSocket or another relay socket: one frame each
            for off in range(0, end - start, seg):
                dst.sink(bytes(frames[off : off + seg]))

    def _checked(self, frame: memoryview, addr: tuple[str, int]) -> None:
        """A hello, a malformed frame, anything else: the relay's full path."""
        src: Addr = (addr[0], addr[1])
        self.relay.on_datagram(bytes(frame), src, self._sink(src), self.sock)


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
