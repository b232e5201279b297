"""Relay frames and the relay's info answer (DESIGN section 9), shared by the server's relay and
the backend's relay client.

One frame format on both transports (a UDP datagram, or one binary WebSocket message):

    byte 0      kind
    HELLO   1   32-byte WireGuard public key + the raw NaCl box of a key proof (purpose "relay")
    WELCOME 2   the relay's server name (UTF-8): the answer to a HELLO that proved its key
    SEND    3   32-byte destination public key + one WireGuard packet (node -> relay)
    RECV    4   32-byte source public key + one WireGuard packet (relay -> node)

Over the WebSocket, when both ends say so (the `BATCH_HEADER` header on the request and on the
answer), one binary message carries one or more frames, each behind its length (2 bytes, big
endian): a busy tunnel pays the per-message costs (a TLS record, a WebSocket frame, a wake-up
on each side) once for the frames queued meanwhile instead of once a packet.

The relay never looks inside the WireGuard packet: it is end-to-end encrypted between the two
nodes, so the relay learns only who talks to whom and how much. A node token never travels over
UDP: a UDP hello proves the key instead (replay refused by the server); a WebSocket is
authenticated by the node token inside TLS.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pydantic import BaseModel

HELLO, WELCOME, SEND, RECV = 1, 2, 3, 4
KEY_LEN = 32
HEADER_LEN = 1 + KEY_LEN  # a frame's kind byte and public key, before its body
# A WireGuard packet is at most the interface MTU + 32 bytes of header and tag; 9216 leaves room
# for jumbo frames and refuses anything larger outright.
MAX_PACKET = 9216
MAX_PROOF = 256  # a sealed proof message is ~80 bytes
MAX_FRAME = HEADER_LEN + MAX_PACKET
HELLO_S = 4.0  # a node re-sends its hello this often (keeps the NAT mapping and registration)
REGISTRATION_TTL_S = 15.0  # a registration not refreshed by a hello for this long is dropped
RELAY_PATH = "/api/v1/relay"
BATCH_HEADER = "x-pcloud-relay-batch"  # "1": this end sends and reads batched messages
MAX_BATCH = 60_000  # bytes of frames in one batched message (the server reads up to 64 KiB)


class FrameError(ValueError):
    """A frame that is malformed or too large: dropped."""


@dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    key: bytes  # HELLO: the sender's key; SEND: destination; RECV: source; WELCOME: b""
    body: bytes  # HELLO: proof box; SEND/RECV: WireGuard packet; WELCOME: server name


def parse(data: bytes) -> Frame:
    """One frame from hostile bytes, or FrameError naming what is wrong."""
    if not data:
        raise FrameError("empty frame")
    if len(data) > MAX_FRAME:
        raise FrameError(f"frame of {len(data)} bytes (at most {MAX_FRAME})")
    kind = data[0]
    if kind == WELCOME:
        if len(data) > 1 + 64:
            raise FrameError("welcome name too long")
        return Frame(kind, b"", data[1:])
    if kind not in (HELLO, SEND, RECV):
        raise FrameError(f"unknown frame kind {kind}")
    if len(data) < HEADER_LEN + 1:
        raise FrameError("frame too short for a key and a body")
    body = data[HEADER_LEN:]
    if kind == HELLO and len(body) > MAX_PROOF:
        raise FrameError("hello proof too long")
    return Frame(kind, data[1:HEADER_LEN], body)


def pack(frames: list[bytes]) -> bytes:
    """One batched WebSocket message of `frames` (their total is the sender's to bound)."""
    return b"".join(len(f).to_bytes(2, "big") + f for f in frames)


def unpack(message: bytes) -> list[bytes]:
    """The frames of a batched message (each still to `parse`), or FrameError."""
    out, off, size = [], 0, len(message)
    while off < size:
        if off + 2 > size:
            raise FrameError("batch ends inside a length")
        n = int.from_bytes(message[off : off + 2], "big")
        if not n or off + 2 + n > size:
            raise FrameError("batch frame length out of range")
        out.append(message[off + 2 : off + 2 + n])
        off += 2 + n
    return out


async def next_message(queue: asyncio.Queue[bytes], batch: bool) -> bytes:
    """The next WebSocket message from a queue of frames: the next frame, or when batching the
    frames queued by now, as many as surely fit MAX_BATCH."""
    frame = await queue.get()
    if not batch:
        return frame
    frames, size = [frame], 2 + len(frame)
    while size <= MAX_BATCH - 2 - MAX_FRAME and not queue.empty():
        frame = queue.get_nowait()
        frames.append(frame)
        size += 2 + len(frame)
    return pack(frames)


def hello(public_key: bytes, proof_box: bytes) -> bytes:
    return bytes((HELLO,)) + public_key + proof_box


def welcome(name: str) -> bytes:
    return bytes((WELCOME,)) + name.encode()[:64]


def send(dst: bytes, packet: bytes) -> bytes:
    return bytes((SEND,)) + dst + packet


def recv(src: bytes, packet: bytes) -> bytes:
    return bytes((RECV,)) + src + packet


class RelayInfo(BaseModel):
    """`GET /api/v1/relay`: where this server's relay listens and what its hellos are sealed to.

    `udp_port` is the relay's UDP port (0: no UDP relay, WebSocket only); the host is the one of
    the server URL the node used, and so is the port unless the server has an explicit
    --relay-port (a home router forwards N/tcp and N/udp to the server's HTTPS port number). `public_key` and `time` are the proof key and clock, as
    `GET /api/v1/key` gives them."""

    name: str
    udp_port: int
    public_key: str
    time: int
