"""GET /netmap/stream: a node's netmap as a stream of JSON lines (netmap.stream does the work).

Two doors: well-formed requests (a node token, `since` a plain number) are taken over by the
HTTP protocol before any ASGI request exists (api.stream_direct: the lean path that keeps a held
stream down to a few objects); everything else reaches this FastAPI route, which documents the
endpoint, gives a bad token or parameter the API's usual 401/422, and streams over ASGI what is
valid but unusual (e.g. a repeated header), or when the server runs without that protocol.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Response
from starlette.types import Receive, Scope, Send

from ..model import now
from ..netmap import stream
from ..protocol import KEEPALIVE_HEADER, MEDIA_TYPE, STREAM_PATH
from ..security import tokens
from ..state import State
from .deps import BearerDep, CurrentNode, StateDep

PATH = "/api/v1" + STREAM_PATH

router = APIRouter(prefix="/api/v1", tags=["nodes"])


# The open streams of each server state (one per app; an admin-socket app shares its state).
_hubs: weakref.WeakKeyDictionary[State, stream.StreamHub] = weakref.WeakKeyDictionary()


def hub_of(state: State) -> stream.StreamHub:
    hub = _hubs.get(state)
    if hub is None:
        hub = _hubs[state] = stream.StreamHub()
    return hub


class _StreamResponse(Response):
    """Hands the ASGI channel to `stream.serve` once FastAPI has checked the request."""

    def __init__(self, state: State, node_id: int, since: int | None, token: str) -> None:
        super().__init__(media_type=MEDIA_TYPE)
        self._args = (state, node_id, since, token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await serve(*self._args, receive, send)


def token_clock(state: State, node_id: int, token: str) -> Callable[[], float | None]:
    """How many seconds the stream's token has left: 0 once it no longer names this node
    (renewed into another, revoked, the node removed), None when it never expires."""
    digest = tokens.digest(token)

    def token_left() -> float | None:
        node = state.nodes.get(node_id)
        if node is None or state.node_by_token.get(digest) != node_id:
            return 0.0
        if node.token_expires_at is None:
            return None
        return (node.token_expires_at - now()).total_seconds()

    return token_left


def serve(
    state: State, node_id: int, since: int | None, token: str, receive: Receive, send: Send
) -> Awaitable[None]:
    keepalive = state.settings.stream_keepalive_s
    left = token_clock(state, node_id, token)
    return stream.serve(state, hub_of(state), node_id, since, receive, send, keepalive, left)


@router.get(
    STREAM_PATH,
    response_class=Response,
    responses={
        200: {
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Netmap"}}},
            "description": "one JSON object a line: a Netmap (the first a full map or the delta "
            "from `since`, then a delta at each change) or the keep-alive "
            f'`{{"keep_alive": true}}` every `{KEEPALIVE_HEADER}` seconds of silence',
        }
    },
)
async def netmap_stream(
    state: StateDep,
    node: CurrentNode,
    token: BearerDep,
    since: Annotated[
        int | None,
        # Versions stay below 2**53 (netmap.broadcast.VersionClock): anything above is no version.
        Query(ge=0, le=2**53, description="the version the node holds"),
    ] = None,
) -> Response:
    return _StreamResponse(state, node.id, since, token)
