"""Simulated nodes for the fan-out benchmark: a lean HTTPS client and the worker process loop.

One worker process drives a share of the simulated nodes on one asyncio loop. Each node owns one
TLS connection to the server: it registers over it, then holds its long poll on it and re-arms
after every answer, like a real backend. The client is hand-written HTTP/1.1 over
`asyncio.open_connection(ssl=...)` because httpx costs several times more CPU per request, and
with thousands of answers arriving at once the client processes share the 2 cores with the server
they measure.

The parent talks to a worker over a multiprocessing pipe with small tuples (see `Worker.serve`).
During a measured change the worker is told which of its nodes must wake; it records every answer
(receive time from `time.monotonic()`, which is system-wide on Linux, so comparable with the
parent's send time) and says `done` once all of those nodes have their answer.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import json
import random
import ssl
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from .fanout_stream import CONN_ERRORS, HttpError, stream_loop

REG_ATTEMPTS = 8  # a registration answered 503 (store busy or behind) is sent again


def proof(private_key: str, server_key: dict[str, Any]) -> str:
    """A proof of `private_key` for registering (as backend.control.proof makes it)."""
    import base64

    import nacl.public

    from pcloud.server.protocol import proof_message

    box = nacl.public.Box(
        nacl.public.PrivateKey(base64.b64decode(private_key)),
        nacl.public.PublicKey(base64.b64decode(server_key["public_key"])),
    )
    sealed = box.encrypt(proof_message("register", int(server_key["time"])))
    return base64.b64encode(bytes(sealed)).decode()


@dataclass
class Response:
    status: int
    body: bytes
    size: int  # bytes at the HTTP layer: status line, headers and body (TLS framing excluded)


class Conn:
    """One keep-alive HTTP/1.1 connection over TLS; requests on it are sequential."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext) -> None:
        self.host = host
        self.port = port
        self.ctx = ctx
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.host_header = f"{host}:{port}".encode()

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.ctx, server_hostname=self.host
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(
        self, method: str, target: str, token: str, body: bytes | None = None
    ) -> Response:
        reused = self.writer is not None
        if not reused:
            await self.open()
        try:
            return await self._exchange(method, target, token, body)
        except CONN_ERRORS:
            self.close()
            if not reused:
                raise
        # The server dropped the connection while it sat idle (uvicorn closes keep-alive ones
        # after 75 s). Every request the benchmark sends is idempotent (registering the same key
        # again returns the same node), so one retry on a fresh connection is safe.
        await self.open()
        return await self._exchange(method, target, token, body)

    async def _exchange(self, method: str, target: str, token: str, body: bytes | None) -> Response:
        assert self.reader is not None and self.writer is not None
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n" % (
            method.encode(),
            target.encode(),
            self.host_header,
            token.encode(),
        )
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        self.writer.write(head + b"\r\n" + (body or b""))
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
        size = len(raw)
        if b"content-length" in headers:
            payload = await self.reader.readexactly(int(headers[b"content-length"]))
            size += len(payload)
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            payload, framed = await self._read_chunked()
            size += framed
        elif status == 204 or status == 304 or 100 <= status < 200:
            payload = b""
        else:
            # A close-delimited body would end the keep-alive connection; the server never
            # sends one, so treat it as a protocol error rather than guess.
            raise HttpError(f"{method} {target}: answer {status} has no length")
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return Response(status, payload, size)

    async def _read_chunked(self) -> tuple[bytes, int]:
        assert self.reader is not None
        parts: list[bytes] = []
        framed = 0
        while True:
            line = await self.reader.readuntil(b"\r\n")
            framed += len(line)
            n = int(line.split(b";", 1)[0], 16)
            chunk = await self.reader.readexactly(n + 2)
            framed += len(chunk)
            if n == 0:
                # The last chunk may carry trailers; the server sends none.
                return b"".join(parts), framed
            parts.append(chunk[:-2])


@dataclass
class NodeSpec:
    idx: int
    hostname: str
    public_key: str
    endpoints: list[str]
    secret: str  # auth key or user token to register with
    role: str | None  # "server" for server-role nodes registered by the admin
    # The WireGuard private key (base64) of a server-role node: its registration carries a
    # proof of it (server.security.nodeproof); clients register without one.
    private_key: str | None = None
    # The coordination server this node registers and streams with (its port on the same
    # host); 0: the worker's server (bench.fanout_servers spreads nodes over several).
    port: int = 0


@dataclass
class SimNode:
    spec: NodeSpec
    conn: Conn
    node_id: int = 0
    token: str = ""
    version: int = 0


@dataclass
class Window:
    """Answers recorded while one change is measured."""

    change: int
    target: int  # node id whose change is being delivered
    pending: set[int]  # this worker's nodes that must still receive it
    records: list[tuple[int, float, int, bool, bool]] = field(default_factory=list)
    signalled: bool = False


class Worker:
    def __init__(self, ctl: Connection) -> None:
        self.ctl = ctl
        self.nodes: list[SimNode] = []
        self.by_id: dict[int, SimNode] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.window: Window | None = None
        self.answers = 0
        self.outstanding = 0
        self.errors = 0
        self.reg_retries = 0  # registrations answered 503 and sent again
        self.last_error = ""
        self.poll_timeout = 55.0
        self.concurrency = 16
        self.opening = asyncio.Semaphore(16)  # TLS handshakes in flight when (re)opening

    def reply(self, msg: tuple[Any, ...]) -> None:
        self.ctl.send(msg)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # recv blocks: run it on a thread so the poll loops keep running meanwhile.
            msg = await loop.run_in_executor(None, self.ctl.recv)
            kind = msg[0]
            if kind == "init":
                self.init(*msg[1:])
                self.reply(("ready",))
            elif kind == "register":
                self.reply(("registered", await self.register_all(), self.reg_retries))
            elif kind == "poll":
                self.poll_timeout = float(msg[1])
                self.tasks = [asyncio.create_task(self.poll_loop(n)) for n in self.nodes]
                self.reply(("polling",))
            elif kind == "stream":
                self.tasks = [
                    asyncio.create_task(
                        stream_loop(self, n, n.conn, n.token, "/api/v1/netmap/stream")
                    )
                    for n in self.nodes
                ]
                self.reply(("streaming",))
            elif kind == "floor":
                # The floor server (bench.floor_server): new connections, the node id as token.
                await self.halt()
                host, port = msg[1], msg[2]
                for n in self.nodes:
                    n.conn = Conn(host, port, n.conn.ctx)
                    n.version = 0
                self.tasks = [
                    asyncio.create_task(stream_loop(self, n, n.conn, str(n.node_id), "/stream"))
                    for n in self.nodes
                ]
                self.reply(("streaming",))
            elif kind == "halt":
                await self.halt()
                self.reply(("halted",))
            elif kind == "stats":
                self.reply(("stats", self.answers, self.outstanding, self.errors, self.last_error))
            elif kind == "begin":
                _, change, target, expected = msg
                self.window = Window(change, target, set(expected))
                self.reply(("begun", change))
                self.maybe_done()
            elif kind == "end":
                window, self.window = self.window, None
                self.reply(("records", window.records if window else []))
            elif kind == "stop":
                await self.stop()
                self.reply(("stopped", self.errors, self.last_error))
                return
            else:
                raise ValueError(f"unknown command {kind!r}")

    def init(
        self, host: str, port: int, ca_pem: str, specs: list[NodeSpec], concurrency: int
    ) -> None:
        # One context for every connection: loading the CA once, and sharing it keeps memory
        # per connection small.
        ctx = ssl.create_default_context(cadata=ca_pem)
        self.nodes = [SimNode(spec, Conn(host, spec.port or port, ctx)) for spec in specs]
        self.concurrency = max(1, concurrency)

    async def register_all(self) -> list[tuple[int, int, str, float, float, str]]:
        """Register every node (bounded concurrency); per node: idx, node id, node token,
        connect seconds, request seconds, error text."""
        sem = asyncio.Semaphore(self.concurrency)
        out: list[tuple[int, int, str, float, float, str]] = []

        async def one(node: SimNode) -> None:
            spec = node.spec
            body: dict[str, Any] = {
                "public_key": spec.public_key,
                "hostname": spec.hostname,
                "endpoints": spec.endpoints,
            }
            if spec.role:
                body["role"] = spec.role
            async with sem:
                t0 = time.monotonic()
                try:
                    await node.conn.open()
                    t1 = time.monotonic()
                    if spec.private_key:
                        key = await node.conn.request("GET", "/api/v1/key", "x")
                        body["proof"] = proof(spec.private_key, json.loads(key.body))
                    for attempt in range(REG_ATTEMPTS):
                        r = await node.conn.request(
                            "POST", "/api/v1/nodes/register", spec.secret, json.dumps(body).encode()
                        )
                        if r.status != 503 or attempt == REG_ATTEMPTS - 1:
                            break
                        # Store busy or behind (servers racing on one etcd): retry as a
                        # backend does, after a pause; the retries are counted and reported.
                        self.reg_retries += 1
                        await asyncio.sleep(min(2.0, 0.1 * 2**attempt) * (0.5 + random.random()))
                    t2 = time.monotonic()
                except (*CONN_ERRORS, HttpError) as exc:
                    out.append((spec.idx, 0, "", 0.0, 0.0, f"{type(exc).__name__}: {exc}"))
                    return
            if r.status != 200:
                out.append((spec.idx, 0, "", t1 - t0, t2 - t1, f"{r.status} {r.body[:300]!r}"))
                return
            doc = json.loads(r.body)
            node.node_id = int(doc["node_id"])
            node.token = str(doc["node_token"])
            node.version = int(doc["netmap"]["version"])
            self.by_id[node.node_id] = node
            out.append((spec.idx, node.node_id, node.token, t1 - t0, t2 - t1, ""))

        await asyncio.gather(*(one(n) for n in self.nodes))
        return out

    async def poll_loop(self, node: SimNode) -> None:
        """Hold this node's long poll, re-arming after each answer with the version it got."""
        while True:
            target = f"/api/v1/netmap?since={node.version}&timeout={self.poll_timeout:g}"
            self.outstanding += 1
            try:
                r = await node.conn.request("GET", target, node.token)
            except (*CONN_ERRORS, HttpError) as exc:
                self.note_error(f"{node.spec.hostname}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(1)  # bounded retry rate; the errors are reported
                continue
            finally:
                self.outstanding -= 1
            received = time.monotonic()
            if r.status != 200:
                self.note_error(f"{node.spec.hostname}: {r.status} {r.body[:200]!r}")
                await asyncio.sleep(1)
                continue
            self.record(node, json.loads(r.body), r.size, received)

    def record(self, node: SimNode, doc: dict[str, Any], size: int, received: float) -> None:
        """One netmap answer (a long poll's, or a stream's line) for the open window."""
        node.version = int(doc["version"])
        self.answers += 1
        window = self.window
        if window is not None:
            changed = {p["node_id"] for p in doc["peers_changed"]}
            hit = window.target in changed
            window.records.append((node.node_id, received, size, hit, bool(doc["full"])))
            if hit:
                window.pending.discard(node.node_id)
                self.maybe_done()

    def maybe_done(self) -> None:
        window = self.window
        if window is not None and not window.pending and not window.signalled:
            window.signalled = True
            self.reply(("done", window.change))

    def note_error(self, text: str) -> None:
        self.errors += 1
        self.last_error = text

    async def stop(self) -> None:
        await self.halt()

    async def halt(self) -> None:
        """End every poll or stream and close the connections."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        for node in self.nodes:
            node.conn.close()
        await asyncio.sleep(0)  # let the transports finish closing


def worker_main(ctl: Connection) -> None:
    """Entry point of a worker process (multiprocessing target)."""
    # asyncio's SSLProtocol gives every TLS connection a zeroed 256 KiB read buffer (~280 KB of
    # RSS each): 2.5 GB for 10,000 simulated nodes. The answers read here are small, so 16 KiB
    # (one TLS record) is plenty; this changes only the simulated clients, never the server.
    asyncio.sslproto.SSLProtocol.max_size = 16 * 1024
    try:
        asyncio.run(Worker(ctl).serve())
    except Exception:  # noqa: BLE001 - handed to the parent, which fails the run with it
        ctl.send(("error", traceback.format_exc()))
    finally:
        ctl.close()
