"""One way to one relay: over UDP (hellos proving our key) or over a WebSocket on the server's
HTTPS port (authenticated by the node token inside TLS). Both carry the same frames
(protocol.relay); a link is `up` while the relay keeps answering."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable

import websockets
from websockets.asyncio.client import ClientConnection

from pcloud.backend.control.proof import make_proof
from pcloud.backend.keys import PrivateKey
from pcloud.server.protocol import RelayInfo, ServerKey
from pcloud.server.protocol import relay as wire
from pcloud.shared.tasks import cancel_and_wait
from pcloud.shared.udpgso import READS_PER_WAKE, RUN_BUFFER, Offload, big_buffers

log = logging.getLogger(__name__)
# (the link it came through, source public key, a run of WireGuard packets of the given size,
# the last may be shorter: a view of the link's buffer, valid only during the call)
OnRecv = Callable[["Link", bytes, memoryview, int], None]
HEADER = wire.HEADER_LEN
DEAD_AFTER_S = 2.5 * wire.HELLO_S  # no welcome for this long: the relay is gone (a backstop)
# Failover speed: a hello unanswered for ANSWER_S is sent again at once, and MISSES_DOWN of them
# in a row take the link down, so a dead relay is left within HELLO_S + MISSES_DOWN * ANSWER_S
# (6 s) instead of DEAD_AFTER_S; while we send through the link, hellos go every EAGER_S instead
# of HELLO_S (traffic is what a dead relay loses), which makes it EAGER_S + 2 s. Leaving a live
# relay by mistake (two welcomes lost) costs nothing: every node registers with every relay, so
# a peer receives through whichever one we send through, and the next welcome brings it back.
ANSWER_S = 1.0  # a welcome takes one round trip; a second is far beyond any home or mobile RTT
MISSES_DOWN = 2
EAGER_S = 1.5  # at most this often (the relay refuses hellos closer than 0.5 s from one address)
PONG_S = 3.0  # the WebSocket's pong deadline (websockets closes the link past it)


class Link:
    transport = "udp"

    def __init__(self, name: str, on_recv: OnRecv) -> None:
        self.name = name
        self.on_recv = on_recv
        self.welcomed_at = 0.0
        self.welcomed = asyncio.Event()  # set by the first welcome
        self.on_up: Callable[[], None] = lambda: None  # called when a welcome brings it up
        self._welcome_seen = asyncio.Event()  # set by every welcome (cleared by the waiter)

    @property
    def up(self) -> bool:
        return time.monotonic() - self.welcomed_at < DEAD_AFTER_S

    def send(self, dst: bytes, packet: bytes) -> None:
        frame = wire.send(dst, packet)
        self.send_frames(memoryview(frame), len(frame))

    def send_frames(self, frames: memoryview, size: int) -> None:
        """A run of whole SEND frames of `size` bytes, the last may be shorter (a view the
        caller reuses once this returns)."""
        raise NotImplementedError

    async def run(self) -> None:
        raise NotImplementedError

    def _frame(self, data: bytes) -> None:
        try:
            frame = wire.parse(data)
        except wire.FrameError:
            return  # hostile or garbled: dropped
        if frame.kind == wire.WELCOME:
            was_up = self.up
            self.welcomed_at = time.monotonic()
            self.welcomed.set()
            self._welcome_seen.set()
            if not was_up:
                self.on_up()
        elif frame.kind == wire.RECV:
            self.on_recv(self, frame.key, memoryview(frame.body), len(frame.body))


class UdpLink(Link):
    """Hellos every HELLO_S (they also keep our NAT mapping to the relay open). The socket is
    read in a tight loop per wake-up: every relayed packet to us comes through it."""

    def __init__(self, info: RelayInfo, host: str, key: PrivateKey, on_recv: OnRecv) -> None:
        Link.__init__(self, info.name, on_recv)
        self.info, self.addr, self.key = info, (host, info.udp_port), key
        # The server's clock, as its relay info gave it: proofs carry its time, not ours.
        self._offset = info.time - time.time()
        self._pub = base64.b64decode(key.public_key())
        self._hello_at = 0.0
        self._wake = asyncio.Event()  # traffic wants the next hello early
        self._io: Offload | None = None
        self._in = memoryview(bytearray(RUN_BUFFER))
        self._out = memoryview(bytearray(RUN_BUFFER))

    def _drain(self) -> None:
        if self._io is None:
            return
        recv, got, out, recv_kind = self._io.recv, self._in, self._out, wire.RECV
        for _ in range(READS_PER_WAKE):
            try:
                n, seg, _addr = recv(got)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._error(e)
                continue
            # A run of frames: their packets, back to back, go to each source's proxy as one run.
            src, w = b"", 0
            for off in range(0, n, seg):
                end = min(off + seg, n)
                if end - off <= HEADER or got[off] != recv_kind:
                    self._frame(bytes(got[off:end]))
                    continue
                key = bytes(got[off + 1 : off + HEADER])
                if key != src:
                    if w:
                        self.on_recv(self, src, out[:w], seg - HEADER)
                    src, w = key, 0
                out[w : w + end - off - HEADER] = got[off + HEADER : end]
                w += end - off - HEADER
            if w:
                self.on_recv(self, src, out[:w], seg - HEADER)

    def _error(self, exc: Exception) -> None:
        log.debug("relay %s over UDP: %s", self.name, exc)
        if isinstance(exc, ConnectionRefusedError) and self.welcomed_at:
            # ICMP port unreachable: nothing listens on the relay port any more (the server
            # stopped while its host lives). Down now; a welcome brings the link back.
            log.info("relay %s over UDP: refused, down", self.name)
            self.welcomed_at = 0.0

    def send_frames(self, frames: memoryview, size: int) -> None:
        if self._io is not None:
            self._sendto(frames, size)
            if time.monotonic() - self._hello_at > EAGER_S:
                self._wake.set()

    def _sendto(self, frames: memoryview, size: int) -> None:
        assert self._io is not None
        try:
            self._io.send(frames, size)  # a full buffer drops the run, as the wire would
        except OSError as e:
            self._error(e)

    async def _connect(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        family, _, _, _, addr = (await loop.getaddrinfo(*self.addr, type=socket.SOCK_DGRAM))[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            big_buffers(sock)
            sock.connect(addr)
        except OSError:
            sock.close()
            raise
        return sock

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        sock = await self._connect()
        self._io = Offload(sock)
        loop.add_reader(sock.fileno(), self._drain)
        misses = 0
        try:
            while True:
                server = ServerKey(
                    public_key=self.info.public_key, time=int(time.time() + self._offset)
                )
                box = base64.b64decode(make_proof(self.key, server, "relay"))
                sent = self._hello_at = time.monotonic()
                hello = wire.hello(self._pub, box)
                self._sendto(memoryview(hello), len(hello))
                if await self._answered(sent):
                    misses = 0
                else:
                    misses += 1
                    if misses == MISSES_DOWN and self.welcomed_at:
                        log.info("relay %s over UDP: %d hellos unanswered, down", self.name, misses)
                        self.welcomed_at = 0.0
                    if misses < MISSES_DOWN:
                        continue  # once more at once: one lost datagram is not a dead relay
                # A period, not synchronisation (a dead relay gets a hello per period too),
                # cut short by traffic once EAGER_S have passed.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    left = sent + wire.HELLO_S - time.monotonic()
                    async with asyncio.timeout(max(0.0, left)):
                        await self._wake.wait()
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()
            self._io = None
            self.welcomed_at = 0.0  # a link no longer run is not up

    async def _answered(self, sent: float) -> bool:
        """Whether a welcome arrives within ANSWER_S of the hello sent at `sent`."""
        deadline = sent + ANSWER_S
        while self.welcomed_at < sent:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._welcome_seen.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._welcome_seen.wait()
        return True


class StreamLink(Link):
    """A WebSocket to `url` (wss://HOST:PORT/api/v1/relay); reconnects while running."""

    transport = "tcp"
    QUEUE = 1024

    def __init__(
        self, name: str, url: str, token: str, ctx: ssl.SSLContext, on_recv: OnRecv
    ) -> None:
        super().__init__(name, on_recv)
        self.url, self._token, self._ctx = url, token, ctx
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(self.QUEUE)

    def send_frames(self, frames: memoryview, size: int) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            for off in range(0, len(frames), size):  # one WebSocket message per frame
                self._queue.put_nowait(bytes(frames[off : off + size]))

    async def run(self) -> None:
        while True:
            try:
                async with websockets.connect(
                    self.url, ssl=self._ctx, max_size=wire.MAX_BATCH + 64,
                    additional_headers={
                        "Authorization": f"Bearer {self._token}", wire.BATCH_HEADER: "1",
                    },
                    open_timeout=5, ping_interval=wire.HELLO_S, ping_timeout=PONG_S,
                ) as ws:  # fmt: skip
                    await self._serve(ws)
            except (OSError, websockets.WebSocketException, TimeoutError) as e:
                log.debug("relay %s over WebSocket: %s", self.name, e)
            self.welcomed_at = 0.0
            await asyncio.sleep(2.0)  # backoff before reconnecting

    async def _serve(self, ws: ClientConnection) -> None:
        # An older server answers without the header: one frame a message both ways.
        batch = ws.response is not None and ws.response.headers.get(wire.BATCH_HEADER) == "1"

        async def writer() -> None:
            while True:
                await ws.send(await wire.next_message(self._queue, batch))

        task = asyncio.create_task(writer())
        try:
            async for message in ws:
                if not isinstance(message, bytes):
                    continue
                try:
                    frames = wire.unpack(message) if batch else [message]
                except wire.FrameError:
                    continue  # hostile or garbled: dropped
                for frame in frames:
                    self._frame(frame)
        finally:
            await cancel_and_wait(task)

    @property
    def up(self) -> bool:
        # Up from the welcome until the socket closes (websockets' pings watch it meanwhile).
        return self.welcomed_at > 0
