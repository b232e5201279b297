"""GET /netmap: the long poll that delivers a node's view, full first and then as deltas."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..errors import unauthorized
from ..netmap import build
from ..protocol import Netmap
from .deps import CurrentNode, StateDep

router = APIRouter(prefix="/api/v1", tags=["nodes"])


@router.get("/netmap", response_model=Netmap, response_model_exclude_none=False)
async def netmap(
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
            await state.bus.wait(node_id, wait)
            if node_id not in state.nodes:
                raise unauthorized("this node was removed while it waited")
            change = state.bus.delta(node_id, since)
        if change.empty():
            return build.unchanged(state, node_id, since)
        return build.delta(state, node_id, change)
    finally:
        state.poll_ended(node_id)
