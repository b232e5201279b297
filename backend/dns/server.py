"""The resolver: asyncio UDP and TCP on one address, port 53 in production.

Questions under the network's domain are answered from the current `NameTable` (A for IPv4
overlay addresses, AAAA for IPv6 ones, NODATA for other types of a known name, NXDOMAIN with the
zone's SOA for unknown names, so caches forget them after 1 s); PTR questions for overlay
addresses are answered too. Everything else is forwarded byte for byte to the upstream resolvers
the system had (UDP queries over UDP, TCP over TCP), trying each in turn. Messages are parsed and
built with dnslib; nothing here writes DNS wire format by hand.

Only local clients are served (loopback, or this device's own address the resolver listens on):
peers reaching the overlay address through the tunnel are refused, so the backend is never an open
forwarder for the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Sequence
from typing import cast

from dnslib import AAAA, QTYPE, RCODE, RR, SOA, A, DNSError, DNSRecord
from dnslib.dns import PTR

from pcloud.backend.dns.names import NameTable

log = logging.getLogger(__name__)

TTL = 5  # short: a rename or a policy change must show through caches (resolved) quickly
NEGATIVE_TTL = 1  # SOA minimum: how long an "unknown name" may be cached
FORWARD_TIMEOUT_S = 2.0
MAX_CACHED = 8192  # answers kept per table (a lookup is ~10x cheaper than parse + build)
MAX_FORWARDS = 256  # queries in flight upstream; beyond that SERVFAIL rather than unbounded sockets
TCP_IDLE_S = 10.0
QUERY = 0


class _Answer(asyncio.DatagramProtocol):
    """One forwarded UDP query: resolves `future` with the first datagram carrying its id."""

    def __init__(self, future: asyncio.Future[bytes], qid: bytes) -> None:
        self.future, self.qid = future, qid

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if len(data) >= 12 and data[:2] == self.qid and not self.future.done():
            self.future.set_result(data)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable and friends
        if not self.future.done():
            self.future.set_exception(exc)


class Resolver:
    """Answers one DNS message (bytes in, bytes out), from the table or from upstream."""

    def __init__(
        self, table: NameTable, upstreams: Sequence[tuple[str, int]] = (), *, cache: bool = True
    ) -> None:
        self._table = table
        # Our answer to a question depends only on its bytes after the 2-byte id and on the
        # table: repeated questions (a host asks for the same few names) skip dnslib entirely.
        self._cache: dict[bytes, bytes] = {}
        self._max_cached = MAX_CACHED if cache else 0
        self.upstreams = list(upstreams)
        self._forwards = asyncio.Semaphore(MAX_FORWARDS)
        self.answered = 0  # from the table
        self.forwarded = 0

    @property
    def table(self) -> NameTable:
        return self._table

    @table.setter
    def table(self, table: NameTable) -> None:
        self._table, self._cache = table, {}  # a new netmap: every cached answer may be stale

    def cached(self, data: bytes) -> bytes | None:
        rest = self._cache.get(data[2:])
        return None if rest is None else data[:2] + rest

    def answer_local(self, data: bytes) -> bytes | None | DNSRecord:
        """Our answer's bytes, or the parsed request when it is not ours (to forward), or None
        when `data` is not a DNS question at all."""
        hit = self.cached(data)
        if hit is not None:
            self.answered += 1
            return hit
        request = self.parse(data)
        if request is None:
            return None
        reply = self.local(request)
        if reply is None:
            return request
        answer = bytes(reply.pack())
        if len(self._cache) >= self._max_cached:
            self._cache.clear()
        if self._max_cached:
            self._cache[data[2:]] = answer[2:]
        self.answered += 1
        return answer

    # -- local answers ---------------------------------------------------------------------

    def local(self, request: DNSRecord) -> DNSRecord | None:
        """The answer from the table, or None when the question is not ours to answer."""
        if request.header.opcode != QUERY or len(request.questions) != 1 or request.header.qr:
            return None
        q = request.q
        qname = str(q.qname).lower()
        table = self.table
        if table.in_zone(qname):
            return self._zone_answer(request, qname, q.qtype)
        if q.qtype == QTYPE.PTR:
            name = table.reverse.get(qname)
            if name is not None:
                reply = request.reply()
                reply.add_answer(RR(q.qname, QTYPE.PTR, rdata=PTR(name), ttl=TTL))
                return reply
        return None

    def _zone_answer(self, request: DNSRecord, qname: str, qtype: int) -> DNSRecord:
        table = self.table
        reply = request.reply()  # aa and ra set, question echoed as asked (0x20 case kept)
        ip = table.addresses.get(qname)
        if ip is not None:
            v6 = ":" in ip
            if qtype in (QTYPE.AAAA if v6 else QTYPE.A, QTYPE.ANY):
                rdata = AAAA(ip) if v6 else A(ip)
                reply.add_answer(
                    RR(request.q.qname, QTYPE.AAAA if v6 else QTYPE.A, rdata=rdata, ttl=TTL)
                )
                return reply
        elif qname != table.zone:
            reply.header.rcode = RCODE.NXDOMAIN
        if qname == table.zone and qtype == QTYPE.SOA:
            reply.add_answer(self._soa())
        else:
            reply.add_auth(self._soa())  # NODATA / NXDOMAIN: the SOA says how long to cache it
        return reply

    def _soa(self) -> RR:
        zone = self.table.zone
        return RR(
            zone, QTYPE.SOA, ttl=NEGATIVE_TTL,
            rdata=SOA(f"ns.{zone}", f"hostmaster.{zone}", (1, 3600, 600, 86400, NEGATIVE_TTL)),
        )  # fmt: skip

    # -- whole messages --------------------------------------------------------------------

    def parse(self, data: bytes) -> DNSRecord | None:
        try:
            return DNSRecord.parse(data)
        except (DNSError, struct.error, IndexError, ValueError, UnicodeDecodeError):
            return None  # not DNS: dropped (UDP) or the connection closed (TCP)

    async def forward(self, request: DNSRecord, data: bytes, *, tcp: bool) -> bytes:
        """The upstream's answer to `data`, or SERVFAIL when none answers."""
        if self.upstreams and not self._forwards.locked():
            async with self._forwards:
                for host, port in self.upstreams:
                    try:
                        if tcp:
                            async with asyncio.timeout(FORWARD_TIMEOUT_S):
                                answer = await _ask_tcp(host, port, data)
                        else:
                            answer = await _ask_udp(host, port, data)
                    except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                        log.debug("upstream %s:%d: %s", host, port, e or type(e).__name__)
                        continue
                    self.forwarded += 1
                    return answer
        reply = request.reply()
        reply.header.aa = 0
        reply.header.rcode = RCODE.SERVFAIL
        return bytes(reply.pack())


async def _ask_udp(host: str, port: int, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bytes] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Answer(future, data[:2]), remote_addr=(host, port)
    )
    try:
        transport.sendto(data)
        async with asyncio.timeout(FORWARD_TIMEOUT_S):
            return await future
    finally:
        transport.close()


async def _ask_tcp(host: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        (size,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(size)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport, though Python 3.11's class does not say so (it is
        # no DatagramTransport subclass, so an isinstance check would fail).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        server, transport = self.server, self.transport
        if transport is None or not server.allowed(str(addr[0])):
            return
        resolver = server.resolver
        result = resolver.answer_local(data)
        if result is None:
            return
        if isinstance(result, bytes):
            # The common case stays synchronous: no task, no await, one sendto.
            transport.sendto(result, addr)
            return
        task = asyncio.ensure_future(resolver.forward(result, data, tcp=False))
        server.track(task)

        def reply_when_done(t: asyncio.Future[bytes]) -> None:
            if not t.cancelled() and not transport.is_closing():
                transport.sendto(t.result(), addr)

        task.add_done_callback(reply_when_done)


class DnsServer:
    """The resolver listening on `host:port` over UDP and TCP until `close()`."""

    def __init__(self, resolver: Resolver, host: str, port: int = 53) -> None:
        self.resolver, self.host, self.port = resolver, host, port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Future[bytes] | asyncio.Task[None]] = set()

    def allowed(self, source: str) -> bool:
        # Loopback, or this device itself (resolved sends from our own overlay address).
        return source.startswith("127.") or source in ("::1", self.host)

    def track(self, task: asyncio.Future[bytes] | asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(self.host, self.port), reuse_port=False
        )
        try:
            self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port)
        except OSError:
            self._udp.close()
            raise
        log.info("resolver listening on %s port %d (UDP and TCP)", self.host, self.port)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if not peer or not self.allowed(str(peer[0])):
            writer.close()
            return
        me = asyncio.current_task()
        if me is not None:
            self.track(me)  # close() cancels idle connections instead of waiting them out
        resolver = self.resolver
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_S):
                    (size,) = struct.unpack("!H", await reader.readexactly(2))
                async with asyncio.timeout(TCP_IDLE_S):
                    data = await reader.readexactly(size)
                result = resolver.answer_local(data)
                if result is None:
                    break
                if isinstance(result, bytes):
                    answer = result
                else:
                    answer = await resolver.forward(result, data, tcp=True)
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tcp is not None:
            await self._tcp.wait_closed()
            self._tcp = None
