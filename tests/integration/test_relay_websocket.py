"""The relay's WebSocket (the TCP path for networks that drop UDP) through the server's
connection limits (server/transport): a WebSocket outlives the head deadline (which used to cut
every one of them at 10 s, so an office desk's relayed traffic stopped for ~2 s in every 12),
a WebSocket that ends gives its source's connection count back (it used to keep it, so a
NAT's address ran out of connections after `--max-connections-per-source` reconnects), and a
backend that batches frames relays to and from one that does not (an older one)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from pcloud.backend.keys import PrivateKey
from pcloud.server.protocol import relay as wire
from tests.integration.test_server_api import register
from tests.support.coord import CoordServer

HEAD_TIMEOUT_S = 1.0
CAP = 2  # connections per source


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoordServer]:
    coord = CoordServer(
        Path(tmp_path_factory.mktemp("relay-ws")) / "server",
        extra_args=[
            "--head-timeout", str(HEAD_TIMEOUT_S), "--max-connections-per-source", str(CAP),
        ],
    ).start()  # fmt: skip
    try:
        yield coord
    finally:
        coord.stop()


@pytest.fixture(scope="module")
def admin(server: CoordServer) -> str:
    return server.setup_admin()


def relay_ws(server: CoordServer, token: str, batch: bool = False) -> websockets.connect:
    url = server.url.replace("https://", "wss://") + wire.RELAY_PATH
    headers = {"Authorization": f"Bearer {token}"} | ({wire.BATCH_HEADER: "1"} if batch else {})
    return websockets.connect(
        url, ssl=server.ssl_context(), additional_headers=headers, open_timeout=5,
        ping_interval=None, max_size=wire.MAX_BATCH + 64,
    )  # fmt: skip


async def test_a_relay_websocket_outlives_the_head_deadline(
    server: CoordServer, admin: str
) -> None:
    node = register(server, admin, "ws-held")
    async with relay_ws(server, node["node_token"]) as ws:
        assert (await ws.recv())[:1] == bytes((wire.WELCOME,))
        held_until = time.monotonic() + HEAD_TIMEOUT_S + 0.5
        while time.monotonic() < held_until:  # answered pings all along, past the deadline
            pong = await ws.ping()
            await pong


async def test_ended_websockets_give_their_connection_back(server: CoordServer, admin: str) -> None:
    node = register(server, admin, "ws-again")
    for _ in range(CAP + 2):  # more than the source may hold at once: each one must end
        async with relay_ws(server, node["node_token"]) as ws:
            assert (await ws.recv())[:1] == bytes((wire.WELCOME,))
    with server.client() as c:
        assert c.get("/api/v1/health").status_code == 200


async def test_batched_and_single_frame_websockets_relay_to_each_other(
    server: CoordServer, admin: str
) -> None:
    keys = [PrivateKey.generate().public_key() for _ in range(2)]
    new = register(server, admin, "ws-batch", public_key=keys[0])
    old = register(server, admin, "ws-single", public_key=keys[1])
    new_key, old_key = (base64.b64decode(k) for k in keys)
    packets = [bytes([4, 0, 0, 0, i]) * 100 for i in range(3)]
    async with (
        relay_ws(server, new["node_token"], batch=True) as a,
        relay_ws(server, old["node_token"]) as b,
    ):
        assert a.response is not None and a.response.headers.get(wire.BATCH_HEADER) == "1"
        assert b.response is not None and wire.BATCH_HEADER not in b.response.headers
        (welcome,) = wire.unpack(await a.recv())  # type: ignore[arg-type]
        assert wire.parse(welcome).kind == wire.WELCOME
        assert wire.parse(await b.recv()).kind == wire.WELCOME  # type: ignore[arg-type]
        await a.send(b"\x00\x05junk")  # a batch cut short: dropped, the socket stays
        await a.send(wire.pack([wire.send(old_key, p) for p in packets]))
        assert [await b.recv() for _ in packets] == [wire.recv(new_key, p) for p in packets]
        await b.send(wire.send(new_key, packets[0]))
        assert wire.unpack(await a.recv()) == [wire.recv(old_key, packets[0])]  # type: ignore[arg-type]
