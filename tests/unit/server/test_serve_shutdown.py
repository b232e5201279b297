"""The server's shutdown survives a relay WebSocket that the peer is closing.

uvicorn's sans-I/O WebSocket protocol (the relay's), fed a real handshake and a real close frame
by websockets' client protocol over a socket pair, is in the window between the peer's close and
`connection_lost` when the server stops: uvicorn's own shutdown of it raises (CI saw the server
die with that traceback), the guarded one closes the connection."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidState
from websockets.protocol import State
from websockets.uri import parse_uri

from pcloud.server.serve import _close_quietly


async def _held(ws: dict[str, object], receive: object, send: object) -> None:
    """An ASGI app that accepts the WebSocket and holds it (as the relay's route does)."""
    assert ws["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"  # type: ignore[operator]
    await send({"type": "websocket.accept"})  # type: ignore[operator]
    await asyncio.Event().wait()


async def closing_connection() -> tuple[WebSocketsSansIOProtocol, socket.socket]:
    """A server-side relay WebSocket whose peer's close frame has just arrived."""
    loop = asyncio.get_running_loop()
    config = uvicorn.Config(_held, ws="websockets-sansio", lifespan="off", log_level="error")
    config.load()
    ours, theirs = socket.socketpair()
    proto = WebSocketsSansIOProtocol(config, ServerState(), {})
    await loop.connect_accepted_socket(lambda: proto, ours)
    client = ClientProtocol(parse_uri("ws://relay/relay"))
    client.send_request(client.connect())
    proto.data_received(b"".join(client.data_to_send()))
    theirs.setblocking(False)
    async with asyncio.timeout(5):
        while client.state is not State.OPEN:  # the server's answer to the handshake
            client.receive_data(await loop.sock_recv(theirs, 65536))
    client.send_close(1000)
    proto.data_received(b"".join(client.data_to_send()))
    return proto, theirs


async def test_uvicorn_alone_raises_in_that_window() -> None:
    proto, theirs = await closing_connection()
    with theirs, pytest.raises(InvalidState):
        proto.shutdown()


async def test_guarded_shutdown_closes_the_connection() -> None:
    proto, theirs = await closing_connection()
    with theirs:
        _close_quietly(proto)
        proto.shutdown()
        assert proto.transport.is_closing()
