"""The server's one door for changes: in-memory working set, write-through store, fan-out.

Every mutation is one store transaction that bumps the version counter; then the in-memory maps
and the policy index are updated and exactly the nodes whose view changed get a log entry and a
wake-up (netmap.broadcast). Reads never touch the store. Accounts (users, tokens, auth keys) live in
`accounts.py` on top of this class; netmap answers are rendered by `netmap.build`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable, Sequence

from .config import Settings
from .errors import ApiError, conflict, not_found
from .ipam import Exhausted, Ipam
from .model import AuthKeyRec, NodeRec, TokenRec, UserRec, from_record, now, to_record
from .netmap.broadcast import Broadcaster
from .policy.document import Policy, parse_policy
from .policy.engine import NodeFacts, PeerIndex
from .store.base import Delete, Op, Put, Store

log = logging.getLogger("pcloud.server.state")


def facts(node: NodeRec) -> NodeFacts:
    return NodeFacts(
        id=node.id, user=node.user, role=node.role, tags=tuple(node.tags), address=node.address
    )


class State:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        snap = store.load()
        self.version = snap.version
        rec = snap.records
        self.users = {k: from_record(UserRec, v) for k, v in rec["user"].items()}
        self.tokens = {k: from_record(TokenRec, v) for k, v in rec["token"].items()}
        self.authkeys = {k: from_record(AuthKeyRec, v) for k, v in rec["authkey"].items()}
        self.nodes: dict[int, NodeRec] = {}
        for v in rec["node"].values():
            node = from_record(NodeRec, v)
            self.nodes[node.id] = node
        self.node_by_key = {n.public_key: n.id for n in self.nodes.values()}
        self.node_by_token = {n.token_digest: n.id for n in self.nodes.values()}
        # How many nodes bear each hostname (unique_hostname without a pass over every node).
        self._hostnames: dict[str, int] = {}
        for n in self.nodes.values():
            self._hostnames[n.hostname] = self._hostnames.get(n.hostname, 0) + 1
        # Each node's rendered `Peer` JSON (netmap.build.peer_json), dropped at every change of
        # the node's record or presence, all of which go through `fanout` or `_drop_node`.
        self.peer_json: dict[int, bytes] = {}
        self.next_node_id = int(rec["meta"].get("next_node_id", {}).get("value", 1))
        self.policy_text: str | None = rec["policy"].get("current", {}).get("text")
        policy: Policy | None = None
        if self.policy_text is not None:
            try:
                policy = parse_policy(self.policy_text)
            except Exception:
                # It passed validation when written; a newer parser may be stricter. Keep serving
                # with the default policy rather than refuse to start, and say so loudly.
                log.error("stored policy no longer parses; serving the default policy until fixed")
        self.policy = policy
        self.index = PeerIndex(policy, self.admins())
        self.index.set_nodes(facts(n) for n in self.nodes.values())
        self.ipam = Ipam(settings.net, [n.address for n in self.nodes.values()])
        self.bus = Broadcaster(self.version)
        for node_id in self.nodes:
            self.bus.track(node_id, self.version)
        self.online: set[int] = set()
        self._polls: dict[int, int] = {}
        self._offline_timers: dict[int, asyncio.TimerHandle] = {}
        self._ephemeral_timers: dict[int, asyncio.TimerHandle] = {}
        self.lock = asyncio.Lock()

    # ---- plumbing -------------------------------------------------------------------------

    def admins(self) -> set[str]:
        return {u.username for u in self.users.values() if u.admin}

    def commit(self, ops: Sequence[Op]) -> int:
        """Write `ops` and the next version in one transaction; returns the new version."""
        version = self.version + 1
        self.store.commit(ops, version)
        self.version = version
        return version

    @staticmethod
    def put_node(node: NodeRec) -> Put:
        return Put("node", str(node.id), to_record(node))

    def fanout(
        self,
        version: int,
        node_id: int,
        before: set[int],
        after: set[int],
        *,
        content_changed: bool,
        self_changed: bool,
    ) -> None:
        """Log one node's change for itself and for every node whose view of it changed."""
        self.peer_json.pop(node_id, None)
        for peer in after - before:
            self.bus.record(version, peer, changed=(node_id,))
        for peer in before - after:
            self.bus.record(version, peer, removed=(node_id,))
        if content_changed:
            for peer in after & before:
                self.bus.record(version, peer, changed=(node_id,))
        if after != before or self_changed:
            self.bus.record(
                version,
                node_id,
                changed=after - before,
                removed=before - after,
                self_changed=self_changed,
            )

    def peers_of(self, node_id: int) -> set[int]:
        return self.index.peers_of(node_id)

    def visible(self, node_id: int, other: int) -> bool:
        """Whether `other` is in `peers_of(node_id)`, without building that set."""
        index = self.index
        return node_id != other and (
            index.can_reach(node_id, other) or index.can_reach(other, node_id)
        )

    # ---- nodes ----------------------------------------------------------------------------

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

    def _hostname_add(self, name: str) -> None:
        self._hostnames[name] = self._hostnames.get(name, 0) + 1

    def _hostname_drop(self, name: str) -> None:
        left = self._hostnames.get(name, 0) - 1
        if left > 0:
            self._hostnames[name] = left
        else:
            self._hostnames.pop(name, None)

    def register(
        self,
        *,
        public_key: str,
        hostname: str,
        endpoints: Iterable[str],
        user: str,
        role: str,
        tags: Sequence[str],
        ephemeral: bool,
        token_digest: str,
        observed: str | None,
        extra_ops: Sequence[Op] = (),
    ) -> NodeRec:
        existing_id = self.node_by_key.get(public_key)
        if existing_id is not None:
            node = self.nodes[existing_id]
            if node.user != user or tuple(node.tags) != tuple(tags):
                raise conflict(
                    "public_key_taken", "public_key is already registered to another owner"
                )
            # Same device logging in again: same node, same address, fresh node token.
            del self.node_by_token[node.token_digest]
            node.token_digest = token_digest
            node.endpoints = tuple(endpoints)
            node.observed = observed
            version = self.commit([self.put_node(node), *extra_ops])
            self.node_by_token[token_digest] = node.id
            peers = self.peers_of(node.id)
            self.fanout(version, node.id, peers, peers, content_changed=True, self_changed=False)
            return node
        try:
            address = self.ipam.allocate(server=role == "server")
        except Exhausted as exc:
            raise conflict("network_exhausted", str(exc)) from None
        node = NodeRec(
            id=self.next_node_id,
            public_key=public_key,
            hostname=self.unique_hostname(hostname),
            user=user,
            role=role,
            tags=tuple(tags),
            address=address,
            endpoints=tuple(endpoints),
            token_digest=token_digest,
            created_at=now(),
            ephemeral=ephemeral,
            last_seen=now(),
            observed=observed,
        )
        try:
            version = self.commit(
                [
                    self.put_node(node),
                    Put("meta", "next_node_id", {"value": node.id + 1}),
                    *extra_ops,
                ]
            )
        except Exception:
            self.ipam.release(address)
            raise
        self.next_node_id = node.id + 1
        self.nodes[node.id] = node
        self._hostname_add(node.hostname)
        self.node_by_key[public_key] = node.id
        self.node_by_token[token_digest] = node.id
        self.index.upsert(facts(node))
        self.bus.track(node.id, version)
        after = self.peers_of(node.id)
        self.fanout(version, node.id, set(), after, content_changed=False, self_changed=False)
        log.info("node %d %s registered for %s at %s", node.id, node.hostname, user, address)
        return node

    def node(self, node_id: int) -> NodeRec:
        node = self.nodes.get(node_id)
        if node is None:
            raise not_found(f"node {node_id}")
        return node

    def update_node(
        self,
        node_id: int,
        *,
        hostname: str | None = None,
        role: str | None = None,
        tags: Sequence[str] | None = None,
        endpoints: Sequence[str] | None = None,
        observed: str | None = None,
        public_key: str | None = None,
        by_self: bool = False,
    ) -> NodeRec:
        node = self.node(node_id)
        if public_key is not None and public_key != node.public_key:
            owner = self.node_by_key.get(public_key)
            if owner is not None and owner != node_id:
                raise conflict("public_key_taken", "public_key belongs to another node")
        before = self.peers_of(node_id)
        old_key = node.public_key
        old_facts = facts(node)
        updated = dataclasses.replace(node)
        if hostname is not None:
            updated.hostname = self.unique_hostname(hostname, node_id)
        if role is not None:
            updated.role = role
        if tags is not None:
            updated.tags = tuple(tags)
        if endpoints is not None:
            updated.endpoints = tuple(endpoints)
            updated.observed = observed
        if public_key is not None:
            updated.public_key = public_key
        if to_record(updated) == to_record(node):
            return node
        version = self.commit([self.put_node(updated)])
        self.nodes[node_id] = updated
        if updated.hostname != node.hostname:
            self._hostname_drop(node.hostname)
            self._hostname_add(updated.hostname)
        if public_key is not None and public_key != old_key:
            del self.node_by_key[old_key]
            self.node_by_key[public_key] = node_id
        if facts(updated) != old_facts:
            self.index.upsert(facts(updated))
        after = self.peers_of(node_id)
        self.fanout(version, node_id, before, after, content_changed=True, self_changed=not by_self)
        return updated

    def delete_node(self, node_id: int, extra_ops: Sequence[Op] = ()) -> None:
        node = self.node(node_id)
        before = self.peers_of(node_id)
        version = self.commit([Delete("node", str(node_id)), *extra_ops])
        self._drop_node(node, version, before)

    def _drop_node(self, node: NodeRec, version: int, before: set[int]) -> None:
        del self.nodes[node.id]
        self._hostname_drop(node.hostname)
        self.peer_json.pop(node.id, None)
        self.node_by_key.pop(node.public_key, None)
        self.node_by_token.pop(node.token_digest, None)
        self.index.remove(node.id)
        self.ipam.release(node.address)
        self.online.discard(node.id)
        for timers in (self._offline_timers, self._ephemeral_timers):
            handle = timers.pop(node.id, None)
            if handle is not None:
                handle.cancel()
        for peer in before:
            self.bus.record(version, peer, removed=(node.id,))
        self.bus.forget(node.id)
        log.info("node %d %s removed", node.id, node.hostname)

    def delete_nodes_of(self, username: str, extra_ops: Sequence[Op]) -> None:
        """Remove every node a user owns, with `extra_ops`, in one transaction."""
        doomed = [n for n in self.nodes.values() if n.user == username and not n.tags]
        befores = {n.id: self.peers_of(n.id) for n in doomed}
        ops: list[Op] = [Delete("node", str(n.id)) for n in doomed]
        version = self.commit([*ops, *extra_ops])
        for n in doomed:
            self._drop_node(n, version, befores[n.id] - set(befores))

    # ---- policy ---------------------------------------------------------------------------

    def set_policy(self, policy: Policy | None) -> int:
        new_index = self.index.copy()
        new_index.set_policy(policy)
        op: Op = (
            Put("policy", "current", {"text": policy.text})
            if policy is not None
            else Delete("policy", "current")
        )
        version = self.commit([op])
        old_index = self.index
        self.index = new_index
        self.policy = policy
        self.policy_text = policy.text if policy is not None else None
        changed = 0
        for node_id in self.nodes:
            before = old_index.peers_of(node_id)
            after = new_index.peers_of(node_id)
            if before != after:
                changed += 1
                self.bus.record(version, node_id, changed=after - before, removed=before - after)
        log.info("policy %s; %d nodes' views changed", "set" if policy else "reset", changed)
        return changed

    # ---- presence -------------------------------------------------------------------------

    def poll_started(self, node_id: int) -> None:
        self._polls[node_id] = self._polls.get(node_id, 0) + 1
        for timers in (self._offline_timers, self._ephemeral_timers):
            handle = timers.pop(node_id, None)
            if handle is not None:
                handle.cancel()
        if node_id not in self.online and node_id in self.nodes:
            self.online.add(node_id)
            self._presence_changed(node_id)

    def poll_ended(self, node_id: int) -> None:
        count = self._polls.get(node_id, 0) - 1
        if count > 0:
            self._polls[node_id] = count
            return
        self._polls.pop(node_id, None)
        if node_id not in self.nodes:
            return
        loop = asyncio.get_running_loop()
        # A client re-polls within milliseconds after each answer; only a gap longer than the
        # grace period means the device is gone (Headscale waits 10 s for the same reason).
        self._offline_timers[node_id] = loop.call_later(
            self.settings.offline_grace_s, self._went_offline, node_id
        )

    def _went_offline(self, node_id: int) -> None:
        self._offline_timers.pop(node_id, None)
        if node_id not in self.nodes or self._polls.get(node_id):
            return
        self.online.discard(node_id)
        self._presence_changed(node_id)
        node = self.nodes[node_id]
        if node.ephemeral:
            loop = asyncio.get_running_loop()
            self._ephemeral_timers[node_id] = loop.call_later(
                self.settings.ephemeral_timeout_s, self._expire_ephemeral, node_id
            )

    def _expire_ephemeral(self, node_id: int) -> None:
        self._ephemeral_timers.pop(node_id, None)
        if node_id in self.nodes and node_id not in self.online:
            log.info("ephemeral node %d offline too long; removing it", node_id)
            self.delete_node(node_id)

    def _presence_changed(self, node_id: int) -> None:
        node = self.nodes[node_id]
        node.last_seen = now()
        version = self.commit([self.put_node(node)])
        peers = self.peers_of(node_id)
        self.fanout(version, node_id, peers, peers, content_changed=True, self_changed=False)

    def sweep_offline_ephemeral(self) -> None:
        """At start nobody is online: give every ephemeral node its offline timer."""
        loop = asyncio.get_running_loop()
        for node in self.nodes.values():
            if node.ephemeral and node.id not in self.online:
                self._ephemeral_timers[node.id] = loop.call_later(
                    self.settings.ephemeral_timeout_s, self._expire_ephemeral, node.id
                )

    def close(self) -> None:
        for timers in (self._offline_timers, self._ephemeral_timers):
            for handle in timers.values():
                handle.cancel()
            timers.clear()
        self.store.close()


def expired(at: dt.datetime) -> bool:
    return at <= now()


def require(cond: bool, status: int, code: str, message: str) -> None:
    if not cond:
        raise ApiError(status, code, message)
