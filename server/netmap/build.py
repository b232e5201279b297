"""Renders netmap answers: the full map of one node's view, or the delta since a version.

Pure functions over the state's in-memory records: the cost is the size of the answer (the
node's peers or the peers that changed), never a pass over every pair of nodes.

The long poll answers with bytes (`*_json`): each peer's JSON is rendered once and cached in
`State.peer_json` until that peer's record or presence changes (the state drops the entry at
every such change), so a change that wakes 10,000 polls serialises the changed peer once, not
10,000 times, and an answer is a join of cached bytes. A delta goes further (netmap.shared):
whether each woken node sees the changed peer is one set lookup, and what follows the node's
own record is one bytes object shared by every node that gets the same delta. The JSON is
pydantic's own rendering of `protocol.Peer`/`protocol.Netmap`, so it is the same document
`response_model` describes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pydantic import TypeAdapter

from ..protocol import FilterRule, Netmap, Peer, dns_label

if TYPE_CHECKING:
    from ..model import NodeRec
    from ..state import State
    from .broadcast import Delta

_PEER_JSON = Peer.__pydantic_serializer__
_FILTER_JSON = TypeAdapter(list[FilterRule])


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
        dns_name=dns_name(state, node),
    )


def dns_name(state: State, node: NodeRec) -> str:
    """`HOSTNAME.<domain>`. Hostnames are unique DNS labels already (the state suffixes `-2`,
    `-3`... on a clash and the API refuses other spellings), so the name is as stable as the
    stored hostname; `dns_label` only guards records written before that rule."""
    return f"{dns_label(node.hostname)}.{state.settings.domain}"


def peer_json(state: State, node: NodeRec) -> bytes:
    """The node's `Peer` JSON, from the cache when its record and presence have not changed."""
    cached = state.peer_json.get(node.id)
    if cached is None:
        cached = state.peer_json[node.id] = _PEER_JSON.to_json(peer(state, node))
    return cached


def filter_json(state: State, node_id: int) -> bytes:
    """The node's packet filter JSON, rendered once per index generation."""
    cached = state.filters.valid_json(state.index, node_id)
    if cached is None:
        rules = state.filters.rules(state.index, node_id)
        cached = state.filters.json[node_id] = _FILTER_JSON.dump_json(rules)
    return cached


def full(state: State, node_id: int) -> Netmap:
    node = state.nodes[node_id]
    peers = [peer(state, state.nodes[p]) for p in sorted(state.peers_of(node_id))]
    return Netmap(
        version=state.version,
        full=True,
        self=peer(state, node),
        peers=peers,
        servers=state.server_urls(),
        domain=state.settings.domain,
        filter=state.filters.rules(state.index, node_id),
    )


def _servers(state: State) -> bytes:
    return json.dumps(state.server_urls(), separators=(",", ":")).encode()


def _trailer(state: State) -> bytes:
    """`],"servers":[...],"domain":"...","filter":`: the same in every answer until the server
    list changes (`FanOut.servers_changed` drops it), so rendered once, not per node."""
    cached = state.servers_json
    if cached is None:
        domain = json.dumps(state.settings.domain).encode()
        cached = b'],"servers":' + _servers(state) + b',"domain":' + domain + b',"filter":'
        state.servers_json = cached
    return cached


def _head(state: State, node_id: int, version: int, full: bool) -> bytes:
    return b"".join(
        (
            b'{"version":%d,"full":%s,"self":' % (version, b"true" if full else b"false"),
            peer_json(state, state.nodes[node_id]),
            b',"peers":[',
        )
    )


def _lists(peers: list[bytes], changed: list[bytes], removed: list[int]) -> bytes:
    return b"".join(
        (
            b",".join(peers),
            b'],"peers_changed":[',
            b",".join(changed),
            b'],"peers_removed":[',
            b",".join(b"%d" % pid for pid in removed),
        )
    )


def _answer(
    state: State,
    node_id: int,
    version: int,
    *,
    full: bool,
    peers: list[bytes] = [],  # noqa: B006 - never mutated
    changed: list[bytes] = [],  # noqa: B006
    removed: list[int] = [],  # noqa: B006
    packet_filter: bytes | None = None,
) -> bytes:
    # Field order and names as in protocol.Netmap.
    return b"".join(
        (
            _head(state, node_id, version, full),
            _lists(peers, changed, removed),
            _trailer(state),
            # The filter only when it is news (a full map, or the node's own change).
            packet_filter if packet_filter is not None else b"null",
            b"}",
        )
    )


def full_json(state: State, node_id: int) -> bytes:
    nodes = state.nodes
    peers = [peer_json(state, nodes[p]) for p in sorted(state.peers_of(node_id))]
    return _answer(
        state,
        node_id,
        state.version,
        full=True,
        peers=peers,
        packet_filter=filter_json(state, node_id),
    )


def delta_json(state: State, node_id: int, d: Delta) -> bytes:
    changed_ids: list[int] = []
    changed: list[bytes] = []
    removed = set(d.removed)
    nodes = state.nodes
    seen_by, key = state.seen_by, (state.version, id(state.index))
    for pid in sorted(d.changed):
        # O(changed peers), not a walk of the node's (maybe 10,000) peers.
        other = nodes.get(pid)
        if other is not None and node_id in seen_by.get(key, pid, state.peers_of):
            changed_ids.append(pid)
            changed.append(peer_json(state, other))
        else:
            # Changed and then hidden or deleted within the same window: it is a removal.
            removed.add(pid)
    if d.self_changed:  # the node's own filter follows: not shared with anyone
        return _answer(
            state,
            node_id,
            state.version,
            full=False,
            changed=changed,
            removed=sorted(removed),
            packet_filter=filter_json(state, node_id),
        )
    gone = sorted(removed)
    trailer = _trailer(state)

    def render() -> bytes:
        return b"".join((_lists([], changed, gone), trailer, b"null}"))

    tail = state.delta_tails.get(changed_ids, changed, gone, trailer, render)
    return _head(state, node_id, state.version, False) + tail


def unchanged_json(state: State, node_id: int, version: int) -> bytes:
    return _answer(state, node_id, version, full=False)
