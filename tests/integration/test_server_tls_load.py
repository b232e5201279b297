"""Many concurrent large answers through a real server's TLS (server/transport/lean_tls.py: one
shared read buffer, answers encrypted 1 KiB at a time): full netmaps of tens of KB on many
connections at once, pipelined on a connection whose reader stalls (the server's writes pause
and resume), first lines of netmap streams, and relay WebSocket frames, all at the same time.
Every byte must arrive and nothing may stall (each step has a deadline)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from pcloud.backend.keys import PrivateKey
from pcloud.server.protocol import relay as wire
from tests.lab.wait import async_wait_for
from tests.support.coord import CoordServer

NODES = 80  # a full netmap of ~35 KB
CLIENTS = 30
PIPELINED = 40  # 1.3 MB of answers to one reader that stalls (its asyncio takes ~400 KB)
STALLED = 512 * 1024  # what waits in the server's send queue before the reader starts


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoordServer]:
    coord = CoordServer(Path(tmp_path_factory.mktemp("tls-load")) / "server").start()
    try:
        yield coord
    finally:
        coord.stop()


async def register_all(server: CoordServer, admin: str) -> list[tuple[dict[str, Any], bytes]]:
    """NODES nodes registered at once (concurrent requests), with their public keys."""
    keys = [PrivateKey.generate().public_key() for _ in range(NODES)]
    async with server.async_client(admin) as c:

        async def one(i: int) -> dict[str, Any]:
            body = {
                "public_key": keys[i],
                "hostname": f"load-node-{i:03d}-" + "x" * 40,
                "endpoints": [f"192.0.2.{i + 1}:51820", f"[2001:db8::{i + 1}]:51820"],
            }
            r = await c.post("/api/v1/nodes/register", json=body)
            assert r.status_code == 200, r.text
            return dict(r.json())

        nodes = await asyncio.gather(*(one(i) for i in range(NODES)))
    return [(n, base64.b64decode(k)) for n, k in zip(nodes, keys, strict=True)]


def hostnames(netmap: dict[str, Any]) -> set[str]:
    return {p["hostname"] for p in netmap["peers"]}


async def full_maps(server: CoordServer, token: str, times: int) -> list[bytes]:
    """`times` full netmaps on one keep-alive connection."""
    async with server.async_client(token) as c:
        return [(await c.get("/api/v1/netmap")).content for _ in range(times)]


async def first_stream_line(server: CoordServer, token: str) -> bytes:
    async with (
        server.async_client(token) as c,
        c.stream("GET", "/api/v1/netmap/stream") as answer,
    ):
        assert answer.status_code == 200
        return (await anext(answer.aiter_lines())).encode()


def send_queue(local_port: int, remote_port: int) -> int:
    """Bytes in the send queue of the loopback TCP socket local_port -> remote_port."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(a.split(":")[1], 16) for a in fields[1:3])
        if (local, remote) == (local_port, remote_port):
            return int(fields[4].split(":")[0], 16)
    return 0


async def pipelined_stalled(server: CoordServer, token: str) -> list[bytes]:
    """PIPELINED full-map requests written at once on a connection with a 4 KiB receive
    window, read only once STALLED bytes wait in the server's send queue: they and the rest
    must all come once it reads. (The server's asyncio buffers fill too only past the kernel's
    send buffer, 4 MB here: tests/unit/server/test_lean_tls.py covers the TLS layer's paused
    writes.)"""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(
        sock=sock, ssl=server.ssl_context(), server_hostname="127.0.0.1"
    )
    head = f"GET /api/v1/netmap HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    writer.write(head.encode() * PIPELINED)
    await writer.drain()
    mine = sock.getsockname()[1]
    await async_wait_for(
        lambda: send_queue(server.port, mine) >= STALLED, timeout=20, what="answers piling up"
    )
    bodies = []
    for _ in range(PIPELINED):
        status = await reader.readuntil(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 200"), status
        length = int(status.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        bodies.append(await reader.readexactly(length))
    writer.close()
    return bodies


async def relay_exchange(
    server: CoordServer, a: tuple[dict[str, Any], bytes], b: tuple[dict[str, Any], bytes]
) -> int:
    """Large relay frames both ways between two nodes' WebSockets, all delivered in order."""
    url = server.url.replace("https://", "wss://") + wire.RELAY_PATH

    def connect(token: str) -> websockets.connect:
        return websockets.connect(
            url, ssl=server.ssl_context(), additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=10, ping_interval=None, max_size=wire.MAX_FRAME + 64,
        )  # fmt: skip

    packets = [bytes([4, 0, 0, 0]) + bytes([i]) * 8000 for i in range(60)]
    async with connect(a[0]["node_token"]) as wa, connect(b[0]["node_token"]) as wb:
        for ws in (wa, wb):
            assert wire.parse(await ws.recv()).kind == wire.WELCOME  # type: ignore[arg-type]
        for p in packets:
            await wa.send(wire.send(b[1], p))
            await wb.send(wire.send(a[1], p))
        assert [await wb.recv() for _ in packets] == [wire.recv(a[1], p) for p in packets]
        assert [await wa.recv() for _ in packets] == [wire.recv(b[1], p) for p in packets]
    return len(packets)


async def test_concurrent_large_answers_arrive_whole(server: CoordServer) -> None:
    admin = server.setup_admin()
    async with asyncio.timeout(60):
        nodes = await register_all(server, admin)
        token = nodes[0][0]["node_token"]
        async with server.async_client(token) as c:
            reference = json.loads((await c.get("/api/v1/netmap")).content)
        want = hostnames(reference) | {reference["self"]["hostname"]}
        assert len(want) == NODES
        tokens = [n["node_token"] for n, _ in nodes]
        map_lists, lines, relayed = await asyncio.gather(
            asyncio.gather(*(full_maps(server, tokens[i % NODES], 3) for i in range(CLIENTS))),
            asyncio.gather(*(first_stream_line(server, t) for t in tokens[:CLIENTS])),
            relay_exchange(server, nodes[1], nodes[2]),
        )
        pipelined = await pipelined_stalled(server, token)
    maps = [m for r in map_lists for m in r]
    assert len(maps) == 3 * CLIENTS and relayed == 60
    assert sum(map(len, maps)) > 3 * CLIENTS * 20_000  # tens of KB each
    for body in maps + pipelined + lines:  # (a stream's first line is a full map)
        netmap = json.loads(body)  # whole: cut or interleaved bytes do not parse
        assert hostnames(netmap) | {netmap["self"]["hostname"]} == want
    assert pipelined == [pipelined[0]] * PIPELINED and len(pipelined[0]) > 20_000
    with httpx.Client(base_url=server.url, verify=server.ssl_context()) as c:
        assert c.get("/api/v1/health").status_code == 200
