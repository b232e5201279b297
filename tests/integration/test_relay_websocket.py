"""The relay's WebSocket (the TCP path for networks that drop UDP) through the server's
connection limits (server/transport): a WebSocket outlives the head deadline (which used to cut
every one of them at 10 s, so an office desk's relayed traffic stopped for ~2 s in every 12),
and a WebSocket that ends gives its source's connection count back (it used to keep it, so a
NAT's address ran out of connections after `--max-connections-per-source` reconnects)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

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


def relay_ws(server: CoordServer, token: str) -> websockets.connect:
    url = server.url.replace("https://", "wss://") + wire.RELAY_PATH
    return websockets.connect(
        url, ssl=server.ssl_context(), additional_headers={"Authorization": f"Bearer {token}"},
        open_timeout=5, ping_interval=None,
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
