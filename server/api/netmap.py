"""GET /netmap: the long poll that delivers a node's view, full first and then as deltas."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request

from ..errors import unauthorized
from ..netmap import build
from ..protocol import Netmap
from .deps import CurrentNode, StateDep

router = APIRouter(prefix="/api/v1", tags=["nodes"])


async def _disconnected(request: Request) -> None:
    # A GET has no body: after the (empty) request message the next one is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _wait_for_change(request: Request, state: StateDep, node_id: int, wait: float) -> bool:
    """Wait for the node's view to change; False if the client went away first.

    Starlette does not cancel a handler when its client disconnects, so without watching for it
    a device that shut down would count as online until its poll timed out (and an ephemeral
    node would outlive its timeout by a minute).
    """
    change = asyncio.ensure_future(state.bus.wait(node_id, wait))
    gone = asyncio.ensure_future(_disconnected(request))
    done, pending = await asyncio.wait({change, gone}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return gone not in done


@router.get("/netmap", response_model=Netmap)
async def netmap(
    request: Request,
    state: StateDep,
    node: CurrentNode,
    since: Annotated[int | None, Query(ge=0, description="the version the node holds")] = None,
    timeout: Annotated[float, Query(ge=0, le=3600, description="seconds to wait")] = 30,
) -> Netmap:
    node_id = node.id
    wait = min(timeout, state.settings.poll_timeout_cap_s)
    state.poll_started(node_id)
    try:
        if since is None or not state.bus.can_delta(node_id, since, state.version):
            return build.full(state, node_id)
        change = state.bus.delta(node_id, since)
        if change.empty() and wait > 0:
            if not await _wait_for_change(request, state, node_id, wait):
                return build.unchanged(state, node_id, since) if node_id in state.nodes else _gone()
            if node_id not in state.nodes:
                _gone()
            change = state.bus.delta(node_id, since)
        if change.empty():
            return build.unchanged(state, node_id, since)
        return build.delta(state, node_id, change)
    finally:
        state.poll_ended(node_id)


def _gone() -> Netmap:
    raise unauthorized("this node was removed while it waited")
