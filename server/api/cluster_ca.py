"""Routes for HA over the server-role channel: the network CA for a new coordination server, a
server's own demotion, and withdrawing its K3s URL (DESIGN sections 5 and 8).

- `GET /cluster/ca` (node token of a server-role node) -> `{ca_cert, ca_key}` PEM: a server that
  joins the control plane issues its own HTTPS leaf and etcd member certificate from the network
  CA. The key leaves this server only here, to a node an admin approved as server, over TLS that
  node pinned to this same CA. Never logged.
- `POST /nodes/self/demote` (node token of a server-role node) -> the caller's role becomes
  client (remove-server --demote). Lowering one's own privilege needs no admin; the node keeps
  its id, address and tunnels.
- `POST /cluster/k3s/withdraw` (server-role node token): the caller's K3s URL leaves the
  published list, so a later join-server does not try a removed server first.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from ..protocol import PromoteAnswer
from ..security.tls import TlsFiles
from ..store.base import Op, Put
from .cluster import META_KEY, ServerNode
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


@router.get("/cluster/ca", response_model=NetworkCa)
async def get_ca(state: StateDep, node: ServerNode) -> NetworkCa:
    files = TlsFiles.in_dir(state.settings.state_dir)
    log.info("network CA handed to server node %d %s", node.id, node.hostname)
    return NetworkCa(ca_cert=files.ca_cert.read_text(), ca_key=files.ca_key.read_text())


@router.post("/nodes/self/demote", response_model=PromoteAnswer)
async def demote_self(body: Empty, state: StateDep, node: ServerNode) -> PromoteAnswer:
    node = await state.update_node(node.id, role="client")
    log.info("node %d %s demoted itself to client", node.id, node.hostname)
    return PromoteAnswer(node_id=node.id, address=node.address, role="client")


@router.post("/cluster/k3s/withdraw", status_code=204)
async def withdraw_k3s(state: StateDep, node: ServerNode) -> None:
    own = f"https://{node.address}:{K3S_PORT}"
    record: dict[str, Any] = {}

    def ops() -> list[Op]:
        value = state.k3s
        if value is None or own not in value["server_urls"]:
            return []  # nothing to withdraw
        record.clear()
        record.update(
            token=value["token"], server_urls=[u for u in value["server_urls"] if u != own]
        )
        return [Put("meta", META_KEY, dict(record))]

    def apply() -> None:
        state.k3s = dict(record)
        log.info("node %d %s withdrew K3s URL %s", node.id, node.hostname, own)

    await state.change(ops, apply)
