"""The relay's forwarding table: who is registered where, and which frames may pass (DESIGN 9).

A node registers by a UDP hello that proves its WireGuard key (security.nodeproof, purpose
"relay") or by a WebSocket authenticated with its node token. A SEND frame is forwarded as a
RECV frame only when its source address (or socket) is a live registration, its destination is
registered too, and the policy lets the two nodes talk (the server's own view: `State.visible`).
Everything else is dropped and counted by reason: it is an open relay for no one.

The WireGuard packet inside is forwarded unchanged and never parsed: it is ciphertext between
the two nodes. Every frame is hostile input: sizes are capped by `protocol.relay.parse`, hellos
(the one costly frame: a NaCl box to open) are limited per source address, and data per source
node by a token bucket.
"""

from __future__ import annotations

import base64
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ApiError
from ..protocol import relay as wire
from ..security.nodeproof import NodeProofs
from ..state import State

log = logging.getLogger("pcloud.server.relay")

Sink = Callable[[bytes], None]
Addr = tuple[str, int]
HELLO_MIN_GAP_S = 0.5  # per source address: a flood of hellos costs one box per half second
DATA_RATE_PPS = 200_000.0  # per registered node (a token bucket): ~2 Gbit/s of full packets
DATA_BURST = 20_000.0
MAX_HELLO_SOURCES = 65_536  # the hello-gap table is cleared past this (bounded memory)
DROP_REASONS = ("malformed", "unregistered", "unknown_peer", "policy", "bad_hello", "rate")


@dataclass(slots=True)
class Registration:
    node_id: int
    sink: Sink
    transport: str  # "udp" or "tcp"
    addr: Addr | None  # UDP source address (None over WebSocket)
    expires: float  # monotonic; inf for a WebSocket (it ends when the socket closes)
    tokens: float = DATA_BURST
    refilled: float = field(default_factory=time.monotonic)
    checked: int = -1  # the state version at which the node was last seen to hold this key
    sock: socket.socket | None = None  # the relay socket the UDP hello came in on
    live: bool = True  # False once replaced or dropped: a cached Route through it is stale


@dataclass(slots=True)
class Route:
    """A pair the slow path let through (both registered, policy allows), cached by the UDP
    fast path per (source address, destination key): valid while both registrations are live
    and unexpired and the state version is the one it was checked at."""

    src: Registration
    dst: Registration
    src_key: bytes
    version: int

    def valid(self, now: float, version: int) -> bool:
        src, dst = self.src, self.dst
        return (
            version == self.version
            and src.live
            and dst.live
            and now <= src.expires
            and now <= dst.expires
        )


class Relay:
    def __init__(self, state: State, proofs: NodeProofs, name: str) -> None:
        self.state, self.proofs, self.name = state, proofs, name
        self.by_key: dict[bytes, Registration] = {}
        self.by_addr: dict[Addr, bytes] = {}
        self._hello_at: dict[Addr, float] = {}
        self._allowed: dict[tuple[int, int], tuple[int, bool]] = {}  # pair -> (version, ok)
        self.forwarded = 0
        self.forwarded_bytes = 0
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)

    # -- registration ---------------------------------------------------------------------

    def _node_of(self, key: bytes) -> int | None:
        return self.state.node_by_key.get(base64.b64encode(key).decode())

    def hello(
        self, frame: wire.Frame, addr: Addr, sink: Sink, sock: socket.socket | None = None
    ) -> None:
        """A UDP hello: register `addr` for the key it proves, answer WELCOME."""
        now = time.monotonic()
        last = self._hello_at.get(addr)
        if last is not None and now - last < HELLO_MIN_GAP_S:
            self.dropped["rate"] += 1
            return
        if len(self._hello_at) >= MAX_HELLO_SOURCES:
            self._hello_at.clear()
        self._hello_at[addr] = now
        node_id = self._node_of(frame.key)
        if node_id is None:
            self.dropped["bad_hello"] += 1
            return
        key_b64 = base64.b64encode(frame.key).decode()
        try:
            self.proofs.verify(key_b64, base64.b64encode(frame.body).decode(), "relay")
        except ApiError as e:
            self.dropped["bad_hello"] += 1
            log.debug("relay hello from %s refused: %s", addr, e.message)
            return
        expires = now + wire.REGISTRATION_TTL_S
        self._register(frame.key, Registration(node_id, sink, "udp", addr, expires, sock=sock))
        sink(wire.welcome(self.name))

    def register_stream(self, key: bytes, node_id: int, sink: Sink) -> None:
        """A WebSocket authenticated by the node token of `node_id`."""
        self._register(key, Registration(node_id, sink, "tcp", None, float("inf")))

    def unregister_stream(self, key: bytes, sink: Sink) -> None:
        reg = self.by_key.get(key)
        if reg is not None and reg.sink is sink:
            self._drop(key)

    def _drop(self, key: bytes) -> Registration | None:
        reg = self.by_key.pop(key, None)
        if reg is not None:
            reg.live = False
        return reg

    def _register(self, key: bytes, reg: Registration) -> None:
        old = self.by_key.get(key)
        if old is not None and old.addr is not None and old.addr != reg.addr:
            self.by_addr.pop(old.addr, None)
        if old is not None:
            reg.tokens, reg.refilled = old.tokens, old.refilled
            old.live = False
        self.by_key[key] = reg
        if reg.addr is not None:
            # One address, one key: a NAT that reuses a port for another node re-points it.
            other = self.by_addr.get(reg.addr)
            if other is not None and other != key:
                self._drop(other)
            self.by_addr[reg.addr] = key

    def _live(self, key: bytes, now: float) -> Registration | None:
        reg = self.by_key.get(key)
        if reg is None:
            return None
        if reg.expires < now:
            self._drop(key)
            if reg.addr is not None:
                self.by_addr.pop(reg.addr, None)
            return None
        version = self.state.version
        if reg.checked != version:  # once per state change, not per frame
            if self._node_of(key) != reg.node_id:  # the node was deleted or rotated its key
                self._drop(key)
                return None
            reg.checked = version
        return reg

    # -- forwarding -----------------------------------------------------------------------

    def on_datagram(
        self, data: bytes, addr: Addr, sink: Sink, sock: socket.socket | None = None
    ) -> None:
        try:
            frame = wire.parse(data)
        except wire.FrameError:
            self.dropped["malformed"] += 1
            return
        if frame.kind == wire.HELLO:
            self.hello(frame, addr, sink, sock)
        elif frame.kind == wire.SEND:
            src = self.by_addr.get(addr)
            if src is None:
                self.dropped["unregistered"] += 1
                return
            self.forward(src, frame)
        else:
            self.dropped["malformed"] += 1

    def on_stream(self, key: bytes, data: bytes) -> None:
        try:
            frame = wire.parse(data)
        except wire.FrameError:
            self.dropped["malformed"] += 1
            return
        if frame.kind != wire.SEND:
            self.dropped["malformed"] += 1
            return
        self.forward(key, frame)

    def forward(self, src_key: bytes, frame: wire.Frame) -> None:
        now = time.monotonic()
        route = self.route(src_key, frame.key, now)
        if route is None:
            return
        if not self.take(route.src, now):
            self.dropped["rate"] += 1
            return
        route.dst.sink(wire.recv(src_key, frame.body))
        self.forwarded += 1
        self.forwarded_bytes += len(frame.body)

    def route_from(self, addr: Addr, dst_key: bytes, now: float) -> Route | None:
        """The route for a SEND frame from UDP source `addr`, or None (the drop counted)."""
        src = self.by_addr.get(addr)
        if src is None:
            self.dropped["unregistered"] += 1
            return None
        return self.route(src, dst_key, now)

    def route(self, src_key: bytes, dst_key: bytes, now: float) -> Route | None:
        """Whether `src_key` may send to `dst_key` now: the checked pair, or None (the drop
        counted). The only place that decides; the UDP fast path caches its answer."""
        src = self._live(src_key, now)
        if src is None:
            self.dropped["unregistered"] += 1
            return None
        dst = self._live(dst_key, now)
        if dst is None:
            self.dropped["unknown_peer"] += 1
            return None
        if not self._allowed_pair(src.node_id, dst.node_id):
            self.dropped["policy"] += 1
            return None
        return Route(src, dst, src_key, self.state.version)

    @staticmethod
    def take(reg: Registration, now: float) -> bool:
        """One frame from `reg`'s token bucket (False: over its rate, drop the frame)."""
        reg.tokens = min(DATA_BURST, reg.tokens + (now - reg.refilled) * DATA_RATE_PPS)
        reg.refilled = now
        if reg.tokens < 1.0:
            return False
        reg.tokens -= 1.0
        return True

    def _allowed_pair(self, a: int, b: int) -> bool:
        # Cached per state version: the policy check is an index walk, a frame is a dict hit.
        version = self.state.version
        hit = self._allowed.get((a, b))
        if hit is not None and hit[0] == version:
            return hit[1]
        ok = self.state.visible(a, b)
        if len(self._allowed) > 100_000:
            self._allowed.clear()
        self._allowed[(a, b)] = (version, ok)
        return ok

    def stats(self) -> dict[str, int]:
        return {
            "registered": len(self.by_key),
            "forwarded": self.forwarded,
            "forwarded_bytes": self.forwarded_bytes,
            **{f"dropped_{k}": v for k, v in self.dropped.items()},
        }
