"""The lean TLS protocol (server/transport/lean_tls.py): connections share one read buffer per
thread and answers are encrypted in slices, yet every connection's bytes arrive whole, both
ways, over real TLS on loopback."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import hashlib
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest

from pcloud.server.security.tls import TlsFiles, ensure_ca, ensure_leaf
from pcloud.server.transport import lean_tls

SIZE = 20_000  # many 1 KiB reads and writes, interleaved between connections


class Digest(asyncio.Protocol):
    """Reads SIZE bytes, answers their SHA-256."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.data = bytearray()

    def data_received(self, data: bytes) -> None:
        self.data += data
        if len(self.data) == SIZE:
            # Its digest, then the bytes back: as one write (the lean protocol encrypts it in
            # slices) and as a view of 4-byte items.
            self.transport.write(hashlib.sha256(self.data).digest())
            self.transport.write(bytes(self.data[: SIZE // 2]))
            self.transport.write(memoryview(self.data[SIZE // 2 :]).cast("I"))


async def exchange(port: int, client: ssl.SSLContext, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    for i in range(0, SIZE, 700):
        writer.write(payload[i : i + 700])
        await writer.drain()
    answer = await reader.readexactly(32)
    assert await reader.readexactly(SIZE) == payload
    writer.close()
    return answer


def _contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    files = TlsFiles.in_dir(tmp_path)
    ensure_ca(files)
    ensure_leaf(files, ["127.0.0.1"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.cert, files.key)
    client_ctx = ssl.create_default_context(cafile=str(files.ca_cert))
    client_ctx.check_hostname = False
    return server_ctx, client_ctx


def test_connections_share_one_buffer_and_get_their_bytes_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asyncio.sslproto, "SSLProtocol", asyncio.sslproto.SSLProtocol)  # restored
    assert lean_tls.install(1024)
    assert asyncio.sslproto.SSLProtocol is lean_tls.LeanSSLProtocol
    server_ctx, client_ctx = _contexts(tmp_path)
    payloads = [os.urandom(SIZE) for _ in range(12)]

    async def main() -> tuple[list[bytes], list[Any]]:
        protocols: list[Digest] = []

        def make() -> Digest:
            protocols.append(Digest())
            return protocols[-1]

        server = await asyncio.get_running_loop().create_server(
            make, "127.0.0.1", 0, ssl=server_ctx
        )
        port = server.sockets[0].getsockname()[1]
        async with server:
            answers = await asyncio.gather(*(exchange(port, client_ctx, p) for p in payloads))
            tls = [p.transport._ssl_protocol for p in protocols]  # type: ignore[attr-defined]
        return answers, tls

    answers, tls = asyncio.run(main())
    assert answers == [hashlib.sha256(p).digest() for p in payloads]
    assert all(type(t) is lean_tls.LeanSSLProtocol for t in tls) and len(tls) == len(payloads)
    assert len({id(t._ssl_buffer) for t in tls}) == 1 and len(tls[0]._ssl_buffer) == 1024
    assert all(t._write_backlog == [] for t in tls)  # a list (not a deque), emptied
    # Under CPython's 30 for an instance dict with keys shared between instances.
    assert len(vars(tls[0])) <= 30

    other: list[bytearray] = []
    thread = threading.Thread(target=lambda: other.append(tls[0]._ssl_buffer))
    thread.start()
    thread.join()
    assert other[0] is not tls[0]._ssl_buffer  # each thread (event loop) has its own


def test_a_larger_buffer_is_kept_and_install_is_idempotent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asyncio.sslproto, "SSLProtocol", asyncio.sslproto.SSLProtocol)
    monkeypatch.setattr(lean_tls, "_buffers", lean_tls._Buffers())
    monkeypatch.setattr(lean_tls.LeanSSLProtocol, "max_size", lean_tls.LeanSSLProtocol.max_size)
    assert lean_tls.install(1024) and lean_tls.install(2048)
    proto = lean_tls.LeanSSLProtocol.__new__(lean_tls.LeanSSLProtocol)
    assert len(proto.get_buffer(-1)) == 2048  # grew once, for every connection
    proto._ssl_buffer = bytearray(10)  # a smaller one is not taken
    assert len(proto._ssl_buffer) == 2048


class Flood(asyncio.Protocol):
    """Writes BLOCK-byte pieces to a client that does not read until asyncio pauses it, more
    while paused, then the rest: every byte must still arrive, in order."""

    def __init__(self) -> None:
        self.made = asyncio.Event()
        self.paused = asyncio.Event()
        self.resumed = asyncio.Event()
        self.sent = hashlib.sha256()
        self.ssl_paused_at_pause = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.made.set()

    def data_received(self, data: bytes) -> None:
        pass

    def pause_writing(self) -> None:
        # The app is paused only once the outgoing BIO holds the SSL high-water mark: the
        # socket transport paused the TLS layer first (`_ssl_writing_paused`), so the writes
        # since went through `_do_write`'s paused branch.
        self.ssl_paused_at_pause = self.transport._ssl_protocol._ssl_writing_paused  # type: ignore[attr-defined]
        self.paused.set()

    def resume_writing(self) -> None:
        self.resumed.set()

    def write(self, piece: bytes) -> None:
        self.sent.update(piece)
        self.transport.write(piece)


async def test_a_reader_that_stalls_gets_every_byte_after_the_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asyncio.sslproto, "SSLProtocol", asyncio.sslproto.SSLProtocol)  # restored
    assert lean_tls.install(1024)
    server_ctx, client_ctx = _contexts(tmp_path)
    floods: list[Flood] = []

    def make() -> Flood:
        floods.append(Flood())
        return floods[-1]

    server = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: fills fast
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    async with server, asyncio.timeout(30):
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=client_ctx, server_hostname="127.0.0.1"
        )
        (flood,) = floods  # (made at accept, before the handshake)
        await flood.made.wait()
        block = 3000  # not a multiple of the 1 KiB slice
        i = 0
        while not flood.paused.is_set() and i < 4000:  # nothing read: the buffers fill up
            flood.write(os.urandom(block))
            i += 1
        # Paused only once the outgoing BIO holds asyncio's high-water mark (512 KiB).
        assert flood.paused.is_set() and i * block > 512 * 1024
        for _ in range(50):  # written while paused: they wait in the outgoing BIO
            flood.write(os.urandom(block))
        total = (i + 50) * block
        got = hashlib.sha256()
        left = total
        while left:
            piece = await reader.read(min(left, 65536))
            assert piece, f"{left} bytes never arrived"
            got.update(piece)
            left -= len(piece)
        await flood.resumed.wait()
        writer.close()
    assert got.digest() == flood.sent.digest()
    assert flood.ssl_paused_at_pause
    assert flood.transport._ssl_protocol._write_backlog == []  # type: ignore[attr-defined]
