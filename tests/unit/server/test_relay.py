"""The relay's forwarding table over a real server state (in-process app, real SQLite, real key
proofs): who may register, which frames pass unchanged, and every way a hostile frame is dropped;
and its UDP fast path over real loopback sockets: a run of frames sent in one sendmsg passes
unchanged, and its route cache lets nothing through that the checked path drops."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest

from pcloud.backend.control.proof import make_proof
from pcloud.backend.keys import PrivateKey
from pcloud.server.protocol import ServerKey
from pcloud.server.protocol import relay as wire
from pcloud.server.relay.core import Relay
from pcloud.server.relay.routes import advertised_port
from pcloud.server.relay.udp import RelaySocket, start_udp
from pcloud.server.security.nodeproof import NodeProofs
from pcloud.shared.udpgso import Offload
from tests.lab import async_wait_for
from tests.support.inproc import CoordApp


class Node:
    """A registered node: its key, and what the relay sent to its address."""

    def __init__(self, app: CoordApp, bearer: str, name: str, port: int) -> None:
        self.key = PrivateKey.generate()
        self.raw = base64.b64decode(self.key.public_key())
        self.addr = ("198.51.100.30", port)
        self.got: list[bytes] = []
        with app.client(bearer) as c:
            r = c.post(
                "/api/v1/nodes/register",
                json={"public_key": self.key.public_key(), "hostname": name, "endpoints": []},
            )
            r.raise_for_status()

    def hello(self, relay: Relay, purpose: str = "relay") -> bytes:
        server = ServerKey(public_key=relay.proofs.public_key, time=int(time.time()))
        box = base64.b64decode(make_proof(self.key, server, purpose))  # type: ignore[arg-type]
        frame = wire.hello(self.raw, box)
        relay.on_datagram(frame, self.addr, self.got.append)
        return frame


@pytest.fixture
def world(coord_app: CoordApp) -> tuple[Relay, Node, Node, Node]:
    admin = coord_app.setup_admin()
    alice = coord_app.create_user(admin, "alice")
    bob = coord_app.create_user(admin, "bob")
    relay = Relay(coord_app.state, NodeProofs(coord_app.state_dir), "rpi111")
    key: Callable[[str], str] = lambda user: coord_app.auth_key(user, reusable=True)  # noqa: E731
    a1 = Node(coord_app, key(alice), "phone", 40001)
    a2 = Node(coord_app, key(alice), "phone2", 40002)
    b1 = Node(coord_app, key(bob), "guest", 40003)
    return relay, a1, a2, b1


def test_registered_pair_is_relayed_unchanged(world: tuple[Relay, Node, Node, Node]) -> None:
    relay, a1, a2, _ = world
    a1.hello(relay)
    a2.hello(relay)
    assert a1.got == [wire.welcome("rpi111")] and a2.got == [wire.welcome("rpi111")]
    packet = bytes([4, 0, 0, 0]) + b"\x99" * 100  # a WireGuard data message: never parsed
    relay.on_datagram(wire.send(a2.raw, packet), a1.addr, a1.got.append)
    assert a2.got[-1] == wire.recv(a1.raw, packet)
    assert relay.forwarded == 1 and relay.forwarded_bytes == len(packet)


def test_hostile_frames_are_dropped(world: tuple[Relay, Node, Node, Node]) -> None:
    relay, a1, a2, b1 = world
    frame = a1.hello(relay)
    a2.hello(relay)
    b1.hello(relay)
    sink: list[bytes] = []
    # From an address that never said hello (a spoofer, or a node's other socket).
    relay.on_datagram(wire.send(a2.raw, b"x" * 40), ("203.0.113.66", 9), sink.append)
    assert relay.dropped["unregistered"] == 1
    # The policy keeps bob's guest from alice's phone: no relaying between them either way.
    relay.on_datagram(wire.send(a1.raw, b"x" * 40), b1.addr, sink.append)
    relay.on_datagram(wire.send(b1.raw, b"x" * 40), a1.addr, sink.append)
    assert relay.dropped["policy"] == 2
    # A key nobody registered with this relay.
    relay.on_datagram(wire.send(b"\x07" * 32, b"x" * 40), a1.addr, sink.append)
    assert relay.dropped["unknown_peer"] == 1
    # A captured hello replayed from elsewhere, a proof for another purpose, an unknown key.
    relay.on_datagram(frame, ("203.0.113.66", 10), sink.append)
    Node.hello(a2, relay, purpose="register")  # same source within the hello gap: rate
    a2.addr = ("198.51.100.30", 50002)
    Node.hello(a2, relay, purpose="register")
    relay.on_datagram(wire.hello(b"\x05" * 32, b"y" * 80), ("203.0.113.66", 11), sink.append)
    assert relay.dropped["bad_hello"] == 3 and relay.dropped["rate"] == 1
    # Garbage: empty, unknown kind, too short, too large, a welcome sent to the relay.
    for junk in (b"", b"\x09" + b"z" * 40, b"\x03" + b"z" * 10, b"\x03" + b"z" * 20_000, b"\x02x"):
        relay.on_datagram(junk, a1.addr, sink.append)
    assert relay.dropped["malformed"] == 5
    assert sink == [] and a2.got == [wire.welcome("rpi111")] and relay.forwarded == 0


def test_deleted_node_loses_its_registration(
    coord_app: CoordApp, world: tuple[Relay, Node, Node, Node]
) -> None:
    relay, a1, a2, _ = world
    a1.hello(relay)
    a2.hello(relay)
    node_id = coord_app.state.node_by_key[a2.key.public_key()]
    with coord_app.admin_client() as c:
        c.delete(f"/api/v1/nodes/{node_id}").raise_for_status()
    relay.on_datagram(wire.send(a2.raw, b"x" * 40), a1.addr, a1.got.append)
    assert relay.dropped["unknown_peer"] == 1 and relay.forwarded == 0


def test_udp_port_answered_is_the_one_of_the_url_the_node_used() -> None:
    # Through the home router's second forward (8444/tcp and /udp to the server's 8443).
    assert advertised_port(8443, True, "203.0.113.10:8444") == 8444
    assert advertised_port(8443, True, "192.168.0.12:8443") == 8443  # on the LAN
    assert advertised_port(8443, True, "[2001:db8::1]:9443") == 9443
    assert advertised_port(8443, True, "home.example.net") == 443  # the default HTTPS port
    assert advertised_port(8443, True, "x:99999") == 8443  # garbled: the bound port
    assert advertised_port(8443, True, None) == 8443
    assert advertised_port(3478, False, "203.0.113.10:8444") == 3478  # an explicit --relay-port
    assert advertised_port(0, True, "203.0.113.10:8444") == 0  # no UDP relay stays none


@pytest.fixture
async def relay_socket(world: tuple[Relay, Node, Node, Node]) -> AsyncIterator[RelaySocket]:
    (sock,) = await start_udp(world[0], ["127.0.0.1"], 0)
    yield sock
    sock.close()


def bound(node: Node) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    node.addr = s.getsockname()
    return s


async def recv_all(s: socket.socket, count: int) -> list[bytes]:
    got: list[bytes] = []

    def more() -> bool:
        try:
            while True:
                got.append(s.recv(4096))
        except BlockingIOError:
            return len(got) >= count

    await async_wait_for(more, timeout=5, what=f"{count} datagrams")
    return got


async def hello(relay: Relay, node: Node, s: socket.socket, port: int) -> None:
    server = ServerKey(public_key=relay.proofs.public_key, time=int(time.time()))
    box = base64.b64decode(make_proof(node.key, server, "relay"))
    s.sendto(wire.hello(node.raw, box), ("127.0.0.1", port))
    assert await recv_all(s, 1) == [wire.welcome("rpi111")]


async def test_a_run_is_relayed_unchanged_and_the_cache_drops_what_the_checks_drop(
    coord_app: CoordApp, world: tuple[Relay, Node, Node, Node], relay_socket: RelaySocket
) -> None:
    relay, a1, a2, b1 = world
    port = relay_socket.sock.getsockname()[1]
    s1, s2, s3 = bound(a1), bound(a2), bound(b1)
    for node, s in ((a1, s1), (a2, s2), (b1, s3)):
        await hello(relay, node, s, port)
    packets = [bytes([4, 0, 0, 0, i]) + bytes([i]) * 995 for i in range(10)] + [b"\x04" * 300]
    run = b"".join(wire.send(a2.raw, p) for p in packets)  # ten of 1,033 bytes, one shorter
    Offload(s1).send(memoryview(run), 1 + wire.KEY_LEN + 1000, ("127.0.0.1", port))
    assert await recv_all(s2, len(packets)) == [wire.recv(a1.raw, p) for p in packets]
    assert relay.forwarded == len(packets)
    # The same frames from an address that never said hello, and across the policy: dropped.
    s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s4.sendto(wire.send(a2.raw, packets[0]), ("127.0.0.1", port))
    s3.sendto(wire.send(a2.raw, packets[0]), ("127.0.0.1", port))
    s1.sendto(wire.send(b1.raw, packets[0]), ("127.0.0.1", port))
    await async_wait_for(
        lambda: relay.dropped["unregistered"] == 1 and relay.dropped["policy"] == 2,
        timeout=5, what="the drops counted",
    )  # fmt: skip
    # The cached route dies with the node: nothing more reaches a deleted peer.
    node_id = coord_app.state.node_by_key[a2.key.public_key()]
    with coord_app.admin_client() as c:
        c.delete(f"/api/v1/nodes/{node_id}").raise_for_status()
    s1.sendto(wire.send(a2.raw, packets[0]), ("127.0.0.1", port))
    await async_wait_for(lambda: relay.dropped["unknown_peer"] == 1, timeout=5, what="drop")
    await asyncio.sleep(0)
    with pytest.raises(BlockingIOError):
        s2.recv(4096)
    assert relay.forwarded == len(packets)
    for s in (s1, s2, s3, s4):
        s.close()
