"""Routes for growing the cluster: the first server's own registration, promotion to server,
and the K3s join token that only server-role nodes may read (DESIGN section 5).

- `POST /cluster/first-server` (admin socket only, i.e. root on this server): registers the
  installing machine before any user exists. The node is owned by its tag `tag:server`, not by
  a person: the network's infrastructure outlives the admin who set it up.
- `POST /nodes/self/promote` `{auth_key, proof}`: a node that is already a client becomes a
  server with a server-role pre-auth key and a proof of its key (an admin may instead PATCH its
  role). Either way it is then owned by `tag:server`, like the first server.

Every route here needs a server-role node token that was issued or renewed against a proof of
the node's WireGuard key (`NodeRec.proven`, security.nodeproof).
- `PUT /cluster/k3s` `{token, server_urls}` by a server-role node: publishes the K3s join token
  and adds that server's K3s URL; `GET /cluster/k3s` answers both to server-role nodes only.

The token is kept as the store's `meta/k3s` record (a K3s token must be handed out as is, so it
cannot be stored as a hash; the store lives in the 0700 state dir). It is cached per process.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from ..accounts import Accounts
from ..errors import ApiError, conflict, forbidden, not_found, unauthorized
from ..model import NodeRec
from ..protocol import (
    INFRA_OWNER,
    SERVER_TAG,
    K3sPublish,
    K3sToken,
    PromoteAnswer,
    PromoteRequest,
    RegisterAnswer,
    RegisterRequest,
)
from ..security import tokens
from ..security.nodeproof import proof_required
from ..state import K3sRecord
from .deps import AccountsDep, BearerDep, CurrentNode, StateDep
from .nodes import observed_endpoint, register_answer

log = logging.getLogger("pcloud.server.cluster")
router = APIRouter(prefix="/api/v1", tags=["cluster"])

# INFRA_OWNER (protocol): owner recorded for server-role nodes; a tagged node is owned by its
# tags, and no account may take the name, so it grants nothing.


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
    if not node.proven:
        raise proof_required(
            f"node {node.hostname}'s token was not issued against a key proof; a server secret "
            "(renew the token: POST /api/v1/nodes/self/token) and this request"
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
    def edit(value: K3sRecord | None) -> K3sRecord:
        if value is not None and not tokens.same(value["token"], body.token):
            raise conflict(
                "token_mismatch",
                "the K3s token differs from the one already published: a server joins the "
                "cluster that exists",
            )
        urls = list(value["server_urls"]) if value else []
        urls += [u for u in body.server_urls if u not in urls]
        return {"token": body.token, "server_urls": urls}

    await state.edit_k3s(edit)
    # Never the token: only who published which URLs.
    log.info(
        "node %d %s published K3s URLs %s",
        node.id,
        node.hostname,
        ", ".join(state.k3s["server_urls"] if state.k3s else []),
    )


@router.post("/nodes/self/promote", response_model=PromoteAnswer)
async def promote(
    body: PromoteRequest, state: StateDep, accounts: AccountsDep, node: CurrentNode
) -> PromoteAnswer:
    if tokens.kind_of(body.auth_key) != tokens.AUTH_KEY:
        raise unauthorized("auth_key is not a pre-auth key")
    key = accounts.check_auth_key(body.auth_key)
    if key.role != "server":
        raise forbidden(f"this auth key is for role {key.role}; promotion needs a server key")
    if body.proof is None:
        raise proof_required("promoting a node to server")
    accounts.proofs.verify(node.public_key, body.proof, "promote")
    if node.role != "server" or not node.proven:
        # Spend the key before the role changes: a crash in between wastes a key, never
        # lets one promote twice.
        await accounts.spend(body.auth_key)
        node = await state.update_node(node.id, role="server", proven=True)
    return PromoteAnswer(node_id=node.id, address=node.address, role="server")


@router.post("/cluster/first-server", response_model=RegisterAnswer)
async def first_server(body: RegisterRequest, request: Request, state: StateDep) -> RegisterAnswer:
    """Register the installing machine (admin socket only): role server, first address."""
    if not getattr(request.app.state, "local_admin", False):
        raise ApiError(
            403, "forbidden", "first-server registration is only on the server's admin socket"
        )
    node_token = tokens.new_token(tokens.NODE_TOKEN)
    accounts: Accounts = request.app.state.accounts
    if body.proof is not None:
        accounts.proofs.verify(body.public_key, body.proof, "register")
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
        # Root on this server (the only one who reaches the admin socket) can read the CA key
        # in the state dir anyway: its word stands for the key proof.
        proven=True,
        may_serve=True,
        token_expires_at=accounts.node_token_expiry(),
    )
    return register_answer(state, node, node_token)
