"""The working set: every record of the store in memory, with the indexes reads need.

Reads never touch the store. This layer only puts committed records into memory and keeps the
indexes in step (by public key, by node token, devices per user, hostnames, the policy's peer
index, IPAM); who hears of a change is the fan-out's job (fanout.py), and nothing here writes.
"""

from __future__ import annotations

import logging
from typing import Any

from ..config import Settings
from ..errors import not_found
from ..ipam import Ipam
from ..model import AuthKeyRec, NodeRec, TokenRec, UserRec, from_record
from ..policy.document import Policy, parse_policy
from ..policy.engine import NodeFacts, PeerIndex
from ..policy.filter import FilterCache
from ..store.base import Kind, Snapshot

log = logging.getLogger("pcloud.server.state")

SERVER_PREFIX = "server:"  # meta records "server:<hostname>": {"urls": [...], "instance": n}


def facts(node: NodeRec) -> NodeFacts:
    return NodeFacts(
        id=node.id, user=node.user, role=node.role, tags=tuple(node.tags), address=node.address
    )


def parse_stored(text: str | None) -> Policy | None:
    """The stored policy document, or None (the default policy)."""
    if text is None:
        return None
    try:
        return parse_policy(text)
    except Exception:
        # It passed validation when written; a newer parser may be stricter. Keep serving
        # with the default policy rather than refuse to start, and say so loudly.
        log.error("stored policy no longer parses; serving the default policy until fixed")
        return None


def _put(table: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


class WorkingSet:
    """The store's records in memory and their indexes (one per server process)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.nodes: dict[int, NodeRec] = {}

    def load_records(self, snap: Snapshot) -> None:
        """(Re)build every table and index from a full snapshot."""
        rec = snap.records
        self.users = {k: from_record(UserRec, v) for k, v in rec["user"].items()}
        self.tokens = {k: from_record(TokenRec, v) for k, v in rec["token"].items()}
        self.authkeys = {k: from_record(AuthKeyRec, v) for k, v in rec["authkey"].items()}
        old_nodes = self.nodes
        self.nodes = {}
        for v in rec["node"].values():
            node = from_record(NodeRec, v)
            old = old_nodes.get(node.id)
            if old is not None and old.last_seen is not None:
                node.last_seen = old.last_seen  # presence is this server's own knowledge
            self.nodes[node.id] = node
        self.node_by_key = {n.public_key: n.id for n in self.nodes.values()}
        self.node_by_token = {n.token_digest: n.id for n in self.nodes.values()}
        # Untagged devices per user (the device quota without a pass over every node).
        self._devices: dict[str, int] = {}
        for n in self.nodes.values():
            self._count_device(n, 1)
        # How many nodes bear each hostname (unique_hostname without a pass over every node).
        self._hostnames: dict[str, int] = {}
        for n in self.nodes.values():
            self._hostname_add(n.hostname)
        # Each node's rendered `Peer` JSON (netmap.build.peer_json), dropped at every change of
        # the node's record or presence, all of which go through `fanout` or `drop_node`.
        self.peer_json: dict[int, bytes] = {}
        self.filters = FilterCache()  # each node's packet filter, per index generation
        self.next_node_id = int(rec["meta"].get("next_node_id", {}).get("value", 1))
        self.k3s: dict[str, Any] | None = rec["meta"].get("k3s")
        self.servers: dict[str, dict[str, Any]] = {
            k[len(SERVER_PREFIX) :]: v
            for k, v in rec["meta"].items()
            if k.startswith(SERVER_PREFIX)
        }
        # The answers' `servers`/`domain` JSON (netmap.build), rendered once per server list:
        # dropped here and at every change of the list (FanOut.servers_changed).
        self.servers_json: bytes | None = None
        self.policy_text: str | None = rec["policy"].get("current", {}).get("text")
        self.policy = parse_stored(self.policy_text)
        self.index = PeerIndex(self.policy, self.admins())
        self.index.set_nodes(facts(n) for n in self.nodes.values())
        # Claimed addresses without a node (a claim orphaned by hand) are never handed out.
        self.addrs: dict[str, int] = {a: int(v.get("node", 0)) for a, v in rec["addr"].items()}
        used = [n.address for n in self.nodes.values()] + list(self.addrs)
        self.ipam = Ipam(self.settings.net, used)

    # ---- reads ----------------------------------------------------------------------------

    def admins(self) -> set[str]:
        return {u.username for u in self.users.values() if u.admin}

    def node(self, node_id: int) -> NodeRec:
        node = self.nodes.get(node_id)
        if node is None:
            raise not_found(f"node {node_id}")
        return node

    def peers_of(self, node_id: int) -> set[int]:
        return self.index.peers_of(node_id)

    def visible(self, node_id: int, other: int) -> bool:
        """Whether `other` is in `peers_of(node_id)`, without building that set."""
        index = self.index
        return node_id != other and (
            index.can_reach(node_id, other) or index.can_reach(other, node_id)
        )

    def server_urls(self) -> list[str]:
        """This server's URLs first, then every other coordination server's (netmap `servers`)."""
        urls = self.settings.server_urls()
        for host in sorted(self.servers):
            if host != self.settings.hostname:
                urls += [u for u in self.servers[host].get("urls", []) if u not in urls]
        return urls

    def unique_hostname(self, wanted: str, node_id: int | None = None) -> str:
        own = self.nodes[node_id].hostname if node_id in self.nodes else None

        def taken(name: str) -> bool:
            return self._hostnames.get(name, 0) - (name == own) > 0

        if not taken(wanted):
            return wanted
        i = 2
        while taken(f"{wanted[:59]}-{i}"):
            i += 1
        return f"{wanted[:59]}-{i}"

    def devices_of(self, user: str) -> int:
        return self._devices.get(user, 0)

    # ---- committed records into memory ----------------------------------------------------

    def upsert_node(self, node: NodeRec, old: NodeRec | None) -> bool:
        """Put a committed node record into memory and every index (local change or watch).
        True when what the policy reads of the node changed (see `fanout`)."""
        if old is not None:
            self._hostname_drop(old.hostname)
            self._count_device(old, -1)
            if self.node_by_key.get(old.public_key) == node.id:
                del self.node_by_key[old.public_key]
            if self.node_by_token.get(old.token_digest) == node.id:
                del self.node_by_token[old.token_digest]
            if old.address != node.address and old.address not in self.addrs:
                self.ipam.release(old.address)
        self._hostname_add(node.hostname)
        self._count_device(node, 1)
        self.nodes[node.id] = node
        self.node_by_key[node.public_key] = node.id
        self.node_by_token[node.token_digest] = node.id
        self.ipam.mark(node.address)
        facts_changed = old is None or facts(old) != facts(node)
        if facts_changed:
            self.index.upsert(facts(node))
        self.peer_json.pop(node.id, None)
        return facts_changed

    def forget_node(self, node: NodeRec) -> None:
        """Take a deleted node out of memory and every index (its address back to IPAM)."""
        del self.nodes[node.id]
        self._hostname_drop(node.hostname)
        self._count_device(node, -1)
        self.peer_json.pop(node.id, None)
        if self.node_by_key.get(node.public_key) == node.id:
            del self.node_by_key[node.public_key]
        self.node_by_token.pop(node.token_digest, None)
        self.index.remove(node.id)
        if self.addrs.get(node.address) in (None, node.id):
            self.addrs.pop(node.address, None)
            self.ipam.release(node.address)

    def put_record(self, kind: Kind, key: str, value: dict[str, Any] | None) -> bool:
        """A committed user, token, auth key, meta or address record (None: deleted) into
        memory; nodes and the policy have their own paths (they fan out). True when the
        coordination-server list changed (every node hears of that)."""
        if kind == "user":
            _put(self.users, key, None if value is None else from_record(UserRec, value))
            # Admin flags never change after creation; a new admin owns no nodes yet and a
            # deleted user's nodes leave in the same commit: no view changes through this alone.
            self.index.set_admins(self.admins())
        elif kind == "token":
            _put(self.tokens, key, None if value is None else from_record(TokenRec, value))
        elif kind == "authkey":
            _put(self.authkeys, key, None if value is None else from_record(AuthKeyRec, value))
        elif kind == "meta":
            if key == "next_node_id" and value is not None:
                self.next_node_id = int(value["value"])
            elif key == "k3s":
                self.k3s = value
            elif key.startswith(SERVER_PREFIX):
                _put(self.servers, key[len(SERVER_PREFIX) :], value)
                return True
        elif kind == "addr":
            if value is None:
                owner = self.addrs.pop(key, None)
                if owner is None or owner not in self.nodes:
                    self.ipam.release(key)
            else:
                self.addrs[key] = int(value.get("node", 0))
                self.ipam.mark(key)
        return False

    # ---- index bookkeeping ----------------------------------------------------------------

    def _count_device(self, node: NodeRec, delta: int) -> None:
        if node.tags:
            return  # a tagged node is owned by its tags, not by its creator
        left = self._devices.get(node.user, 0) + delta
        if left > 0:
            self._devices[node.user] = left
        else:
            self._devices.pop(node.user, None)

    def _hostname_add(self, name: str) -> None:
        self._hostnames[name] = self._hostnames.get(name, 0) + 1

    def _hostname_drop(self, name: str) -> None:
        left = self._hostnames.get(name, 0) - 1
        if left > 0:
            self._hostnames[name] = left
        else:
            self._hostnames.pop(name, None)
