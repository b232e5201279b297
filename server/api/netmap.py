"""GET /netmap: the long poll that delivers a node's view, full first and then as deltas.

Two doors lead to the same `poll` below:

- `NetmapFastPath`, a pure ASGI middleware inside the app, answers well-formed polls (a node
  token, `since`/`timeout` as plain numbers) without FastAPI's routing, dependency solving and
  response validation. At 10,000 nodes every node holds one of these requests, and what a
  waiting request keeps alive (coroutine frames, exit stacks, request objects) is most of the
  server's memory per node after TLS itself (DESIGN section 7: RSS under 300 MB at 10,000).
- the FastAPI route, which documents the endpoint (`response_model=Netmap` for the OpenAPI
  schema) and serves everything the fast path hands on: missing or bad tokens, malformed
  parameters, so every error keeps FastAPI's validation and error format.

Both return the answer as bytes rendered by `netmap.build` (cached per-peer JSON), never as a
model that FastAPI would validate and serialise once per woken poll.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..accounts import Accounts
from ..errors import ApiError, unauthorized
from ..netmap import build
from ..protocol import Netmap
from ..state import State
from ..transport.ratelog import RateLimitedLog
from .deps import CurrentNode, StateDep

PATH = "/api/v1/netmap"
TIMEOUT_MAX = 3600

router = APIRouter(prefix="/api/v1", tags=["nodes"])
_warn = RateLimitedLog(logging.getLogger("pcloud.server.netmap"))

_Outcome = bool | None  # True: the view changed; False: timed out; None: the client went away


async def _disconnected(receive: Receive) -> None:
    # A GET has no body: after the (empty) request message the next one is the disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass


def _settle(fut: asyncio.Future[Any], value: _Outcome) -> None:
    if not fut.done():
        fut.set_result(value)


def _on_gone(fut: asyncio.Future[Any], _task: asyncio.Task[None]) -> None:
    _settle(fut, None)


def _cap_polls(state: State, node_id: int) -> None:
    """Make room for one more waiting poll of the node within `max_polls_per_node`: the oldest
    ones are answered "unchanged" (their clients re-poll, or are gone: a device that lost its
    connection without a FIN leaves its old poll behind)."""
    keep = state.settings.max_polls_per_node - 1
    answered = state.bus.trim_waiters(node_id, keep)
    if answered:
        _warn.warning(
            "polls-per-node",
            "node %d holds more than %d long polls: answered the %d oldest (--max-polls-per-node)",
            node_id,
            keep + 1,
            answered,
        )


async def _wait_for_change(state: State, node_id: int, wait: float, receive: Receive) -> _Outcome:
    """Wait for the node's view to change, the timeout, or the client going away.

    Starlette does not cancel a handler when its client disconnects, so without watching for it
    a device that shut down would count as online until its poll timed out (and an ephemeral
    node would outlive its timeout by a minute). One future carries all three outcomes: the
    broadcaster settles it on a change, a timer on the timeout, and the one helper task that
    watches `receive` on the disconnect.
    """
    _cap_polls(state, node_id)
    fut: asyncio.Future[Any] | None = state.bus.waiter(node_id)
    if fut is None:
        return False
    loop = asyncio.get_running_loop()
    timer = loop.call_later(wait, _settle, fut, False)
    gone = loop.create_task(_disconnected(receive))
    gone.add_done_callback(lambda task: _on_gone(fut, task))
    try:
        result: _Outcome = await fut
        return result
    finally:
        timer.cancel()
        if not gone.done():
            gone.cancel()
        state.bus.release(node_id, fut)


async def poll(
    state: State, node_id: int, since: int | None, timeout: float, receive: Receive
) -> bytes | None:
    """The JSON answer to one long poll; None if the node was removed while it waited."""
    # A stopping server answers at once: its held polls were just released (see
    # serve.DrainingServer) and a poll that slips in must not be cut off with a 500.
    wait = 0 if state.draining else min(timeout, state.settings.poll_timeout_cap_s)
    state.poll_started(node_id)
    try:
        if since is None or not state.vouches(node_id, since):
            return build.full_json(state, node_id)
        if wait > 0 and not state.bus.has_news(node_id, since):
            await _wait_for_change(state, node_id, wait, receive)
            if node_id not in state.nodes:
                return None
            if not state.vouches(node_id, since):
                return build.full_json(state, node_id)  # the state was reloaded meanwhile
        change = state.bus.delta(node_id, since)
        if change.empty():
            return build.unchanged_json(state, node_id, since)
        return build.delta_json(state, node_id, change)
    finally:
        state.poll_ended(node_id)


@router.get("/netmap", response_model=Netmap)
async def netmap(
    request: Request,
    state: StateDep,
    node: CurrentNode,
    since: Annotated[int | None, Query(ge=0, description="the version the node holds")] = None,
    timeout: Annotated[float, Query(ge=0, le=TIMEOUT_MAX, description="seconds to wait")] = 30,
) -> Response:
    body = await poll(state, node.id, since, timeout, request.receive)
    if body is None:
        raise unauthorized("this node was removed while it waited")
    return Response(body, media_type="application/json")


# ---- the lean door ------------------------------------------------------------------------------

_SINCE = re.compile(rb"[0-9]{1,18}")
_TIMEOUT = re.compile(rb"[0-9]{1,4}(?:\.[0-9]{1,6})?")


def _parse(scope: Scope) -> tuple[str, int | None, float] | None:
    """(token, since, timeout) of a plainly well-formed poll; None for anything else, which the
    FastAPI route then answers (with its validation and errors)."""
    token: str | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if token is not None:
                return None
            scheme, _, cred = value.partition(b" ")
            cred = cred.strip()
            if scheme.lower() != b"bearer" or not cred or not cred.isascii():
                return None
            token = cred.decode()
    if token is None:
        return None
    since: int | None = None
    timeout = 30.0
    seen: set[bytes] = set()
    query: bytes = scope.get("query_string", b"")
    for part in query.split(b"&") if query else ():
        key, eq, value = part.partition(b"=")
        if not eq or key in seen:
            return None
        seen.add(key)
        if key == b"since" and _SINCE.fullmatch(value):
            since = int(value)
        elif key == b"timeout" and _TIMEOUT.fullmatch(value) and float(value) <= TIMEOUT_MAX:
            timeout = float(value)
        else:
            return None
    return token, since, timeout


class NetmapFastPath:
    """Serves well-formed `GET /api/v1/netmap` polls straight from `poll` (see the module doc);
    hands every other request, and every poll it cannot serve, to the app unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: Any = None

    def _netmap_route(self, scope: Scope) -> Any:
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
        app_state = scope["app"].state
        accounts: Accounts = app_state.accounts
        if parsed is None:
            await self.app(scope, receive, send)
            return
        token, since, timeout = parsed
        try:
            node = accounts.node_for_token(token)
        except ApiError:
            await self.app(scope, receive, send)
            return
        body = await poll(app_state.pcloud, node.id, since, timeout, receive)
        if body is None:
            # Removed while it waited: the route answers the 401 in the API's error format (a
            # GET has no body left to read, and its token no longer resolves).
            await self.app(scope, receive, send)
            return
        scope["route"] = self._netmap_route(scope)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
