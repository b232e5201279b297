"""The relay's HTTP side: `GET /api/v1/relay` (where its UDP socket is, the proof key and clock)
and the WebSocket on the same path, authenticated by the node token, for networks that block
UDP. One binary message is one frame (protocol.relay), as one datagram is over UDP."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect

from pcloud.shared.tasks import cancel_and_wait

from ..api.deps import AccountsDep, CurrentNode
from ..errors import ApiError
from ..protocol import RelayInfo
from ..protocol import relay as wire
from .core import Relay

log = logging.getLogger("pcloud.server.relay")
router = APIRouter()
QUEUE_FRAMES = 1024  # a slow WebSocket reader loses frames past this (WireGuard copes)


def _relay(app_state: object) -> Relay | None:
    return getattr(app_state, "relay", None)


def advertised_port(bound: int, follows: bool, used: str | None) -> int:
    """The UDP port a node should send to: with no --relay-port the relay's port has the number
    of the HTTPS port, and a router forwarding port N/tcp forwards N/udp too (the README), so
    the answer follows the port of the URL the node used (`used`: the request's Host header,
    e.g. `203.0.113.10:8444` through the home router's second forward). An explicit
    --relay-port (`follows` False, set by `service.attach`) is given as is: its public number is not ours to guess."""
    if not follows or not bound or used is None:
        return bound
    try:
        port = urlsplit("//" + used).port
    except ValueError:  # a hostile or garbled Host header: the bound port
        return bound
    return port if port else 443  # no port in Host: the default HTTPS port was used


@router.get(wire.RELAY_PATH, response_model=RelayInfo)
async def relay_info(request: Request, accounts: AccountsDep, node: CurrentNode) -> RelayInfo:
    relay = _relay(request.app.state)
    if relay is None:
        raise ApiError(404, "no_relay", "this server runs no relay")
    state, host = request.app.state, request.headers.get("host")
    return RelayInfo(
        name=relay.name,
        udp_port=advertised_port(state.relay_udp_port, state.relay_port_follows, host),
        public_key=accounts.proofs.public_key,
        time=int(time.time()),
    )


@router.websocket(wire.RELAY_PATH)
async def relay_stream(ws: WebSocket) -> None:
    relay = _relay(ws.app.state)
    auth = ws.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if relay is None or scheme.lower() != "bearer" or not token:
        await ws.close(code=4401)
        return
    try:
        node = ws.app.state.accounts.node_for_token(token.strip())
    except ApiError as e:
        await ws.close(code=4401, reason=e.code)
        return
    # Batched messages only with a backend that asked (an older one sends and reads one frame).
    batch = ws.headers.get(wire.BATCH_HEADER) == "1"
    await ws.accept(headers=[(wire.BATCH_HEADER.encode(), b"1")] if batch else None)
    key = base64.b64decode(node.public_key)
    queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_FRAMES)

    def sink(frame: bytes) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(frame)

    async def writer() -> None:
        while True:
            await ws.send_bytes(await wire.next_message(queue, batch))

    relay.register_stream(key, node.id, sink)
    log.info("relay: node %d connected over WebSocket", node.id)
    task = asyncio.create_task(writer())
    try:
        welcome = wire.welcome(relay.name)
        await ws.send_bytes(wire.pack([welcome]) if batch else welcome)
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes")
            if data is None:
                relay.dropped["malformed"] += 1
                continue
            if not batch:
                relay.on_stream(key, data)
                continue
            try:
                frames = wire.unpack(data)
            except wire.FrameError:
                relay.dropped["malformed"] += 1
                continue
            for frame in frames:
                relay.on_stream(key, frame)
    except WebSocketDisconnect:
        pass
    finally:
        relay.unregister_stream(key, sink)
        with contextlib.suppress(Exception):  # the writer's own end (a closed socket)
            await cancel_and_wait(task)
