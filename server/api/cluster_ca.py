"""Routes for HA over the server-role channel: the network CA for a new coordination server, a
server's own demotion, and withdrawing its K3s URL and its coordination URLs (DESIGN sections 5
and 8).

- `GET /cluster/ca` (node token of a server-role node) -> `{ca_cert, ca_key}` PEM: a server that
  joins the control plane issues its own HTTPS leaf and etcd member certificate from the network
  CA. The key leaves this server only here, to a node an admin approved as server, over TLS that
  node pinned to this same CA. Never logged.
- `POST /nodes/self/demote` (node token of a server-role node) -> the caller's role becomes
  client and it loses `tag:server` (its other tags stay) (remove-server --demote). Lowering
  one's own privilege needs no admin; the node keeps its id, address and tunnels.
- `POST /cluster/k3s/withdraw` (server-role node token): the caller's K3s URL leaves the
  published list, so a later join-server does not try a removed server first.
- `DELETE /cluster/servers/self` (server-role node token) -> `{withdrawn: [urls]}`: the caller's
  coordination server record (meta `server:<its hostname>`) leaves the store, so netmaps stop
  listing a stopped server's URLs (remove-server, once that server is stopped). Idempotent:
  `withdrawn` is empty when there was nothing to remove.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from ..protocol import SERVER_TAG, PromoteAnswer
from ..security.tls import TlsFiles
from ..state import K3sRecord
from .cluster import ServerNode
from .deps import StateDep

log = logging.getLogger("pcloud.server.cluster")
router = APIRouter(prefix="/api/v1", tags=["cluster"])

K3S_PORT = 6443


class NetworkCa(BaseModel):
    ca_cert: str
    ca_key: str

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return "NetworkCa(ca_cert=..., ca_key=<secret>)"

    __str__ = __repr__


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Withdrawn(BaseModel):
    withdrawn: list[str]


@router.get("/cluster/ca", response_model=NetworkCa)
async def get_ca(state: StateDep, node: ServerNode) -> NetworkCa:
    files = TlsFiles.in_dir(state.settings.state_dir)
    log.info("network CA handed to server node %d %s", node.id, node.hostname)
    return NetworkCa(ca_cert=files.ca_cert.read_text(), ca_key=files.ca_key.read_text())


@router.post("/nodes/self/demote", response_model=PromoteAnswer)
async def demote_self(body: Empty, state: StateDep, node: ServerNode) -> PromoteAnswer:
    # Only the tag first-server registration gave: a tagged node is owned by its tags, and a
    # client owned by tag:server would still match every rule written for the servers.
    tags = [t for t in state.node(node.id).tags if t != SERVER_TAG]
    node = await state.update_node(node.id, role="client", tags=tags)
    log.info("node %d %s demoted itself to client", node.id, node.hostname)
    return PromoteAnswer(node_id=node.id, address=node.address, role="client")


@router.post("/cluster/k3s/withdraw", status_code=204)
async def withdraw_k3s(state: StateDep, node: ServerNode) -> None:
    own = f"https://{node.address}:{K3S_PORT}"

    def edit(value: K3sRecord | None) -> K3sRecord | None:
        if value is None or own not in value["server_urls"]:
            return None  # nothing to withdraw
        return {
            "token": value["token"],
            "server_urls": [u for u in value["server_urls"] if u != own],
        }

    if await state.edit_k3s(edit):
        log.info("node %d %s withdrew K3s URL %s", node.id, node.hostname, own)


@router.delete("/cluster/servers/self", response_model=Withdrawn)
async def withdraw_server(state: StateDep, node: ServerNode) -> Withdrawn:
    """The caller's coordination server leaves the list netmaps give (`server:<hostname>`)."""
    urls = await state.withdraw_server(node.hostname)
    if urls is None:
        return Withdrawn(withdrawn=[])  # already withdrawn
    log.info(
        "node %d %s withdrew its coordination server %s",
        node.id,
        node.hostname,
        ", ".join(urls) or "(no URLs)",
    )
    return Withdrawn(withdrawn=urls)
