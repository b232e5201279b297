"""Renders netmap answers: the full map of one node's view, or the delta since a version.

Pure functions over the state's in-memory records: the cost is the size of the answer (the
node's peers or the peers that changed), never a pass over every pair of nodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol import Netmap, Peer

if TYPE_CHECKING:
    from ..model import NodeRec
    from ..state import State
    from .broadcast import Delta


def peer(state: State, node: NodeRec) -> Peer:
    return Peer(
        node_id=node.id,
        hostname=node.hostname,
        user=node.user if not node.tags else "tagged-devices",
        role=node.role,  # type: ignore[arg-type]
        tags=list(node.tags),
        public_key=node.public_key,
        address=node.address,
        endpoints=node.all_endpoints(),
        online=node.id in state.online,
        last_seen=node.last_seen,
    )


def full(state: State, node_id: int) -> Netmap:
    node = state.nodes[node_id]
    peers = [peer(state, state.nodes[p]) for p in sorted(state.peers_of(node_id))]
    return Netmap(
        version=state.version,
        full=True,
        self=peer(state, node),
        peers=peers,
        servers=state.settings.server_urls(),
    )


def delta(state: State, node_id: int, d: Delta) -> Netmap:
    node = state.nodes[node_id]
    visible = state.peers_of(node_id) if d.changed else set()
    changed = []
    removed = set(d.removed)
    for pid in sorted(d.changed):
        if pid in visible and pid in state.nodes:
            changed.append(peer(state, state.nodes[pid]))
        else:
            # Changed and then hidden or deleted within the same window: it is a removal.
            removed.add(pid)
    return Netmap(
        version=state.version,
        full=False,
        self=peer(state, node),
        peers_changed=changed,
        peers_removed=sorted(removed),
        servers=state.settings.server_urls(),
    )


def unchanged(state: State, node_id: int, version: int) -> Netmap:
    return Netmap(
        version=version,
        full=False,
        self=peer(state, state.nodes[node_id]),
        servers=state.settings.server_urls(),
    )
