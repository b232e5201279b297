"""The backend's resolver on loopback: names from the netmap over UDP and TCP, NODATA/NXDOMAIN
with the zone's SOA, PTR, and forwarding to a real upstream DNS server (dnslib's)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from dnslib.server import DNSLogger, DNSServer

from pcloud.backend.dns.names import build_table
from pcloud.backend.dns.server import DnsServer, Resolver
from pcloud.server.protocol import Netmap, Peer
from tests.support.dns_upstream import FixedResolver
from tests.support.ports import free_port


def peer(node_id: int, hostname: str, address: str, dns_name: str = "") -> Peer:
    return Peer(
        node_id=node_id, hostname=hostname, user="alice", role="client", tags=[],
        public_key="k", address=address, endpoints=[], online=True, last_seen=None,
        dns_name=dns_name,
    )  # fmt: skip


NETMAP = Netmap(
    version=1, full=True, domain="pcloud.internal",
    self=peer(1, "laptop", "10.0.0.9", "laptop.pcloud.internal"),
    peers=[
        peer(2, "rpi112", "10.0.0.2", "rpi112.pcloud.internal"),
        peer(3, "rpi113", "10.0.0.3"),  # an older server: no dns_name, derived the same way
        peer(4, "rpi112", "10.0.0.4", "rpi112.pcloud.internal"),  # never two answers
        peer(5, "v6", "fd00::5", "v6.pcloud.internal"),
    ],
)  # fmt: skip


@pytest.fixture
def upstream() -> Iterator[int]:
    port = free_port()
    quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    servers = [
        DNSServer(FixedResolver({"outside.example": "192.0.2.7"}), address="127.0.0.1",
                  port=port, tcp=tcp, logger=quiet)
        for tcp in (False, True)
    ]  # fmt: skip
    for s in servers:
        s.start_thread()
    yield port
    for s in servers:
        s.stop()


def ask(port: int, name: str, qtype: str = "A", *, tcp: bool = False) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    return DNSRecord.parse(q.send("127.0.0.1", port, tcp=tcp, timeout=5))


def test_table_has_every_visible_name_once() -> None:
    table = build_table(NETMAP)
    assert table.addresses == {
        "laptop.pcloud.internal.": "10.0.0.9",
        "rpi112.pcloud.internal.": "10.0.0.2",  # the lower node id keeps a duplicated name
        "rpi113.pcloud.internal.": "10.0.0.3",
        "v6.pcloud.internal.": "fd00::5",
    }
    assert table.reverse["2.0.0.10.in-addr.arpa."] == "rpi112.pcloud.internal."


async def test_answers_names_and_forwards_the_rest(upstream: int) -> None:
    port = free_port()
    server = DnsServer(Resolver(build_table(NETMAP), [("127.0.0.1", upstream)]), "127.0.0.1", port)
    await server.start()
    try:

        def check() -> None:
            a = ask(port, "RPI112.pcloud.internal")  # case-insensitive, case echoed
            assert a.header.aa and [str(r.rdata) for r in a.rr] == ["10.0.0.2"]
            assert str(a.q.qname) == "RPI112.pcloud.internal."
            assert [str(r.rdata) for r in ask(port, "rpi113.pcloud.internal", tcp=True).rr] == [
                "10.0.0.3"
            ]
            nodata = ask(port, "rpi112.pcloud.internal", "AAAA")
            assert nodata.header.rcode == RCODE.NOERROR and not nodata.rr
            assert nodata.auth[0].rtype == QTYPE.SOA and nodata.auth[0].ttl == 1
            assert [str(r.rdata) for r in ask(port, "v6.pcloud.internal", "AAAA").rr] == ["fd00::5"]
            gone = ask(port, "hidden.pcloud.internal")
            assert gone.header.rcode == RCODE.NXDOMAIN and gone.auth[0].rtype == QTYPE.SOA
            ptr = ask(port, "9.0.0.10.in-addr.arpa", "PTR")
            assert [str(r.rdata) for r in ptr.rr] == ["laptop.pcloud.internal."]
            for tcp in (False, True):
                out = ask(port, "outside.example", tcp=tcp)
                assert [str(r.rdata) for r in out.rr] == ["192.0.2.7"]
            assert ask(port, "nowhere.example").header.rcode == RCODE.NXDOMAIN  # upstream's

        await asyncio.to_thread(check)
        assert server.resolver.forwarded == 3
        # A new netmap is the next query's answer (a rename).
        renamed = NETMAP.model_copy(
            update={"peers": [peer(2, "web", "10.0.0.2", "web.pcloud.internal")]}
        )
        server.resolver.table = build_table(renamed)
        web = await asyncio.to_thread(ask, port, "web.pcloud.internal")
        assert [str(r.rdata) for r in web.rr] == ["10.0.0.2"]
        old = await asyncio.to_thread(ask, port, "rpi112.pcloud.internal")
        assert old.header.rcode == RCODE.NXDOMAIN
        # rpi113's answer was cached before the swap (same question bytes): gone with it.
        gone = await asyncio.to_thread(ask, port, "rpi113.pcloud.internal", "A", tcp=True)
        assert gone.header.rcode == RCODE.NXDOMAIN
        # Garbage is dropped without killing the server.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x00\x01garbage", ("127.0.0.1", port))
        assert (await asyncio.to_thread(ask, port, "web.pcloud.internal")).rr
    finally:
        await server.close()


async def test_servfail_when_no_upstream_answers() -> None:
    port, dead = free_port(), free_port()
    server = DnsServer(Resolver(build_table(NETMAP), [("127.0.0.1", dead)]), "127.0.0.1", port)
    await server.start()
    try:
        a = await asyncio.to_thread(ask, port, "outside.example")
        assert a.header.rcode == RCODE.SERVFAIL
    finally:
        await server.close()
