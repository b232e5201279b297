"""Routes for growing the cluster: the first server's own registration, promotion to server,
and the K3s join token that only server-role nodes may read (DESIGN section 5).

- `POST /cluster/first-server` (admin socket only, i.e. root on this server): registers the
  installing machine before any user exists. The node is owned by its tag `tag:server`, not by
  a person: the network's infrastructure outlives the admin who set it up.
- `POST /nodes/self/promote` `{auth_key}`: a node that is already a client becomes a server
  with a server-role pre-auth key (an admin may instead PATCH its role).
- `PUT /cluster/k3s` `{token, server_urls}` by a server-role node: publishes the K3s join token
  and adds that server's K3s URL; `GET /cluster/k3s` answers both to server-role nodes only.

The token is kept as the store's `meta/k3s` record (a K3s token must be handed out as is, so it
cannot be stored as a hash; the store lives in the 0700 state dir). It is cached per process.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from ..errors import ApiError, conflict, forbidden, not_found, unauthorized
from ..model import NodeRec
from ..netmap import build
from ..protocol import (
    K3sPublish,
    K3sToken,
    PromoteAnswer,
    PromoteRequest,
    RegisterAnswer,
    RegisterRequest,
)
from ..security import tokens
from ..store.base import Op, Put
from .deps import AccountsDep, BearerDep, CurrentNode, StateDep
from .nodes import observed_endpoint

log = logging.getLogger("pcloud.server.cluster")
router = APIRouter(prefix="/api/v1", tags=["cluster"])

SERVER_TAG = "tag:server"
# Owner recorded for the first server; a tagged node is owned by its tags, so this name grants
# nothing (netmaps show tagged nodes as "tagged-devices").
INFRA_OWNER = "pcloud"
META_KEY = "k3s"


async def server_node(accounts: AccountsDep, secret: BearerDep) -> NodeRec:
    """The calling node, which must hold the server role; 403 names why not."""
    if tokens.kind_of(secret) != tokens.NODE_TOKEN:
        raise forbidden("the K3s join token is only for server-role nodes: send a node token")
    node = accounts.node_for_token(secret)
    if node.role != "server":
        raise forbidden(
            f"node {node.hostname} has role {node.role}: only server-role nodes may use the "
            "K3s join token (an admin approves it with join-server first)"
        )
    return node


ServerNode = Annotated[NodeRec, Depends(server_node)]


@router.get("/cluster/k3s", response_model=K3sToken)
async def get_k3s(state: StateDep, _: ServerNode) -> K3sToken:
    value = state.k3s
    if value is None:
        raise not_found("a published K3s join token (the first server has not started K3s yet)")
    return K3sToken(token=value["token"], server_urls=list(value["server_urls"]))


@router.put("/cluster/k3s", status_code=204)
async def put_k3s(body: K3sPublish, state: StateDep, node: ServerNode) -> None:
    record: dict[str, Any] = {}

    def ops() -> list[Op]:
        value = state.k3s
        if value is not None and not tokens.same(value["token"], body.token):
            raise conflict(
                "token_mismatch",
                "the K3s token differs from the one already published: a server joins the "
                "cluster that exists",
            )
        urls = list(value["server_urls"]) if value else []
        urls += [u for u in body.server_urls if u not in urls]
        record.clear()
        record.update(token=body.token, server_urls=urls)
        return [Put("meta", META_KEY, dict(record))] if record != value else []

    def apply() -> None:
        state.k3s = dict(record)
        # Never the token: only who published which URLs.
        log.info(
            "node %d %s published K3s URLs %s",
            node.id,
            node.hostname,
            ", ".join(record["server_urls"]),
        )

    await state.change(ops, apply)


@router.post("/nodes/self/promote", response_model=PromoteAnswer)
async def promote(
    body: PromoteRequest, state: StateDep, accounts: AccountsDep, node: CurrentNode
) -> PromoteAnswer:
    if tokens.kind_of(body.auth_key) != tokens.AUTH_KEY:
        raise unauthorized("auth_key is not a pre-auth key")
    key = accounts.check_auth_key(body.auth_key)
    if key.role != "server":
        raise forbidden(f"this auth key is for role {key.role}; promotion needs a server key")
    if node.role != "server":
        # Spend the key before the role changes: a crash in between wastes a key, never
        # lets one promote twice.
        await state.change(
            lambda: accounts.spend_ops(body.auth_key), lambda: accounts.spent(body.auth_key)
        )
        node = await state.update_node(node.id, role="server")
    return PromoteAnswer(node_id=node.id, address=node.address, role="server")


@router.post("/cluster/first-server", response_model=RegisterAnswer)
async def first_server(body: RegisterRequest, request: Request, state: StateDep) -> RegisterAnswer:
    """Register the installing machine (admin socket only): role server, first address."""
    if not getattr(request.app.state, "local_admin", False):
        raise ApiError(
            403, "forbidden", "first-server registration is only on the server's admin socket"
        )
    node_token = tokens.new_token(tokens.NODE_TOKEN)
    node = await state.register(
        public_key=body.public_key,
        hostname=body.hostname,
        endpoints=body.endpoints,
        user=INFRA_OWNER,
        role="server",
        tags=(SERVER_TAG,),
        ephemeral=False,
        token_digest=tokens.digest(node_token),
        observed=observed_endpoint(request, body.endpoints),
    )
    return RegisterAnswer(
        node_id=node.id,
        node_token=node_token,
        address=node.address,
        network=str(state.settings.net),
        netmap=build.full(state, node.id),
    )
