"""Routes for devices: registration, a node's own updates, and admin management.

Key proofs (security.nodeproof): `GET /key` gives the server's proof key and clock; `register`
checks a `proof` of `public_key` whenever one is sent and needs it for a server-role node (new or
logging in again); `rotate-key` needs a proof of the NEW key on a server-role node;
`POST /nodes/self/token` renews the presented node token, even an expired one, against a proof of
the node's current key.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Callable

from fastapi import APIRouter, Request

from ..errors import forbidden, unauthorized
from ..model import NodeRec
from ..netmap import build
from ..protocol import (
    EndpointsUpdate,
    NodeInfo,
    NodeUpdate,
    RegisterAnswer,
    RegisterRequest,
    RenewAnswer,
    RenewRequest,
    RotateKeyAnswer,
    RotateKeyRequest,
    ServerKey,
    check_endpoint,
    is_lan_address,
)
from ..security import tokens
from ..security.nodeproof import proof_required
from ..state import State
from ..store.base import Op
from .deps import AccountsDep, AdminUser, BearerDep, CurrentNode, StateDep, client_ip

router = APIRouter(prefix="/api/v1", tags=["nodes"])


def observed_endpoint(request: Request, endpoints: list[str]) -> str | None:
    """The node's address as this server sees it, with the WireGuard port it reported.

    On a LAN this equals a reported endpoint; behind NAT it is the public side, which is the
    candidate most likely to work, so it is tried first. A node that reaches this server at a
    private address shares its NAT: with a `--public-url` naming a public IP, its candidate from
    outside is that IP with its own port (a guess that holds for port-preserving NATs, the
    common home router and Linux masquerade; DESIGN section 9).
    """
    if not endpoints or request.client is None:
        return None
    try:
        ip = ipaddress.ip_address(client_ip(request))
    except ValueError:
        return None
    if ip.is_loopback:
        return None
    shared = _shared_public_ip(request, ip)
    if shared is not None:
        ip = shared
    port = endpoints[0].rpartition(":")[2]
    seen = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    try:
        check_endpoint(seen)  # the same rules as reported endpoints: no zone, no link-local...
    except ValueError:
        return None
    return None if seen in endpoints else seen


def _shared_public_ip(
    request: Request, ip: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The public IP of `--public-url` when `ip` is a private LAN address behind the same NAT."""
    settings = request.app.state.pcloud.settings
    if not is_lan_address(ip) or not settings.public_url or ip in settings.net:
        return None
    # A name is resolved (and re-resolved as a dynamic address moves) by server/reach.
    public = request.app.state.reach.public.current()
    if public is None:
        return None
    lan = is_lan_address(public) or public.is_loopback or public.is_link_local
    return None if lan or public.version != ip.version else public


@router.get("/key", response_model=ServerKey, tags=["meta"])
async def server_key(accounts: AccountsDep) -> ServerKey:
    """The key a node seals its proofs to, and this server's clock for their timestamp."""
    return ServerKey(public_key=accounts.proofs.public_key, time=int(time.time()))


@router.post("/nodes/register", response_model=RegisterAnswer)
async def register(
    body: RegisterRequest,
    request: Request,
    state: StateDep,
    accounts: AccountsDep,
    secret: BearerDep,
) -> RegisterAnswer:
    also: Callable[[], list[Op]] | None = None
    key_rec = None
    if tokens.kind_of(secret) == tokens.AUTH_KEY:
        key_rec = accounts.check_auth_key(secret)
        if body.role is not None and body.role != key_rec.role:
            raise forbidden(f"role {body.role!r} is not allowed by this {key_rec.role} auth key")
        owner, role, tags, ephemeral = key_rec.user, key_rec.role, key_rec.tags, key_rec.ephemeral
        may_serve = key_rec.role == "server"
        owner_rec = state.users.get(owner)
        exempt = owner_rec is not None and owner_rec.admin
        # Checked again at every attempt and spent in the registration's own commit.
        also = functools.partial(accounts.spend_ops, secret)
    elif tokens.kind_of(secret) == tokens.USER_TOKEN:
        caller = accounts.caller(secret)
        role = body.role or "client"
        if role == "server" and not caller.admin:
            raise forbidden("only an admin may register a server-role node")
        owner, tags, ephemeral = caller.username, (), False
        may_serve = exempt = caller.admin
    else:
        raise unauthorized(
            "this is not a PCloud auth key (they start with pcak_) nor a login token: check "
            "the key you were given, or ask an admin for one: "
            "pcloud-server admin auth-keys create --user NAME"
        )
    proven = False
    if body.proof is not None:
        accounts.proofs.verify(body.public_key, body.proof, "register")
        proven = True
    node_token = tokens.new_token(tokens.NODE_TOKEN)
    node = await state.register(
        public_key=body.public_key,
        hostname=body.hostname,
        endpoints=body.endpoints,
        user=owner,
        role=role,
        tags=tags,
        ephemeral=ephemeral,
        token_digest=tokens.digest(node_token),
        observed=observed_endpoint(request, body.endpoints),
        also=also,
        proven=proven,
        may_serve=may_serve,
        token_expires_at=accounts.node_token_expiry(),
        quota_exempt=exempt,
    )
    if key_rec is not None:
        accounts.spent(secret)
    return register_answer(state, node, node_token)


def register_answer(state: State, node: NodeRec, node_token: str) -> RegisterAnswer:
    return RegisterAnswer(
        node_id=node.id,
        node_token=node_token,
        address=node.address,
        network=str(state.settings.net),
        netmap=build.full(state, node.id),
        node_token_expires_at=node.token_expires_at,
        node_token_ttl_s=state.settings.node_token_ttl_s if node.token_expires_at else None,
    )


@router.post("/nodes/self/token", response_model=RenewAnswer)
async def renew_token(
    body: RenewRequest, state: StateDep, accounts: AccountsDep, secret: BearerDep
) -> RenewAnswer:
    """Extend the presented node token (valid or expired, not revoked) with a key proof."""
    node = accounts.node_for_token(secret, allow_expired=True)
    accounts.proofs.verify(node.public_key, body.proof, "renew")
    expires = accounts.node_token_expiry()
    await state.update_node(node.id, token_expires_at=expires, proven=True, by_self=True)
    return RenewAnswer(expires_at=expires, ttl_s=state.settings.node_token_ttl_s)


@router.put("/nodes/self/endpoints", status_code=204)
async def update_endpoints(
    body: EndpointsUpdate, request: Request, state: StateDep, node: CurrentNode
) -> None:
    await state.update_node(
        node.id,
        endpoints=body.endpoints,
        observed=observed_endpoint(request, body.endpoints),
        by_self=True,
    )


@router.post("/nodes/self/rotate-key", response_model=RotateKeyAnswer)
async def rotate_key(
    body: RotateKeyRequest, state: StateDep, accounts: AccountsDep, node: CurrentNode
) -> RotateKeyAnswer:
    proven = False
    if body.proof is not None:
        accounts.proofs.verify(body.public_key, body.proof, "rotate")
        proven = True
    elif node.role == "server":
        raise proof_required("rotating a server-role node's key")
    updated = await state.update_node(
        node.id, public_key=body.public_key, by_self=True, proven=proven
    )
    return RotateKeyAnswer(node_id=updated.id, address=updated.address)


@router.delete("/nodes/self", status_code=204)
async def logout(state: StateDep, node: CurrentNode) -> None:
    await state.delete_node(node.id)


def node_info(state: State, node: NodeRec) -> NodeInfo:
    return NodeInfo(
        **build.peer(state, node).model_dump(), created_at=node.created_at, ephemeral=node.ephemeral
    )


@router.get("/nodes", response_model=list[NodeInfo])
async def list_nodes(state: StateDep, _: AdminUser) -> list[NodeInfo]:
    return [node_info(state, n) for n in sorted(state.nodes.values(), key=lambda n: n.id)]


@router.patch("/nodes/{node_id}", response_model=NodeInfo)
async def update_node(node_id: int, body: NodeUpdate, state: StateDep, _: AdminUser) -> NodeInfo:
    if body.tags is not None and state.policy is not None:
        unknown = [t for t in body.tags if t not in state.policy.tag_owners]
        if unknown:
            raise forbidden(f"tag {unknown[0]!r} is not in the policy's tagOwners")
    node = await state.update_node(node_id, hostname=body.hostname, role=body.role, tags=body.tags)
    return node_info(state, node)


@router.delete("/nodes/{node_id}", status_code=204)
async def delete_node(node_id: int, state: StateDep, _: AdminUser) -> None:
    await state.delete_node(node_id)
