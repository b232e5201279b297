"""GET /netmap/stream: a node's netmap as a stream of JSON lines (netmap.stream does the work).

Two doors, as for the long poll (api.netmap): `StreamFastPath`, a pure ASGI middleware, serves
well-formed requests (a node token, `since` a plain number) without FastAPI's routing and
dependency solving, whose objects would otherwise stay alive for the stream's whole life at every
node; the FastAPI route documents the endpoint and answers everything else, so a bad token or
parameter gets the API's usual 401/422.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..accounts import Accounts
from ..errors import ApiError
from ..model import now
from ..netmap import stream
from ..protocol import KEEPALIVE_HEADER, MEDIA_TYPE, STREAM_PATH
from ..security import tokens
from ..state import State
from .deps import BearerDep, CurrentNode, StateDep
from .netmap import _parse

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


def serve(
    state: State, node_id: int, since: int | None, token: str, receive: Receive, send: Send
) -> Awaitable[None]:
    digest = tokens.digest(token)

    def token_left() -> float | None:
        # Seconds the stream's token has left: 0 once it no longer names this node (renewed
        # into another, revoked, the node removed), None when it never expires.
        node = state.nodes.get(node_id)
        if node is None or state.node_by_token.get(digest) != node_id:
            return 0.0
        if node.token_expires_at is None:
            return None
        return (node.token_expires_at - now()).total_seconds()

    keepalive = state.settings.stream_keepalive_s
    return stream.serve(state, hub_of(state), node_id, since, receive, send, keepalive, token_left)


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


class StreamFastPath:
    """Serves well-formed `GET /api/v1/netmap/stream` requests straight from `stream.serve`;
    hands every other request, and every stream request it cannot serve, to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: Any = None

    def _stream_route(self, scope: Scope) -> Any:
        # The route object, so the metrics middleware labels these requests as FastAPI would.
        if self._route is None:
            for route in scope["app"].routes:
                if getattr(route, "path", None) == PATH:
                    self._route = route
        return self._route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        parsed = _parse(scope)
        if parsed is None:
            await self.app(scope, receive, send)
            return
        token, since, _timeout = parsed
        app_state = scope["app"].state
        accounts: Accounts = app_state.accounts
        try:
            node = accounts.node_for_token(token)
        except ApiError:
            await self.app(scope, receive, send)
            return
        scope["route"] = self._stream_route(scope)
        await serve(app_state.pcloud, node.id, since, token, receive, send)
