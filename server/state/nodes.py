"""Node changes: registration, logging in again, updates (role, tags, endpoints, keys) and removal.

Each builds a `Plan` from the working set and runs it through `transact`, so a node's record,
its address claim and whatever the change spends (an auth key) commit together, and the nodes
whose view changed hear of it in the plan's `apply`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..errors import ApiError, conflict
from ..ipam import Exhausted
from ..model import NodeRec, now, to_record
from ..protocol import INFRA_OWNER, SERVER_TAG
from ..security.nodeproof import proof_required
from ..store.base import Claim, Delete, Op, Put
from .transact import Plan, Transactions

log = logging.getLogger("pcloud.server.state")


def server_owned(tags: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """Owner and tags of a server-role node: owned by `tag:server` (first, plus any other tags),
    never by a person, so no user credential reaches the network's infrastructure."""
    return INFRA_OWNER, (SERVER_TAG, *[t for t in tags if t != SERVER_TAG])


class NodeChanges(Transactions):
    """Transactions that change nodes."""

    @staticmethod
    def put_node(node: NodeRec) -> Put:
        return Put("node", str(node.id), to_record(node))

    async def register(
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
        also: Callable[[], Sequence[Op]] | None = None,
        proven: bool = False,
        may_serve: bool = False,
        token_expires_at: dt.datetime | None = None,
        quota_exempt: bool = False,
    ) -> NodeRec:
        """Register a device. `also` (re)checks whatever the registration spends (an auth key)
        against the working set of each attempt and returns the ops that spend it.

        `proven`: the caller proved the private key of `public_key` (security.nodeproof);
        `may_serve`: the credential may hold a server-role node (an admin, a server-role key).
        A server-role node is always registered as `server_owned`, with a proof; logging an
        existing server-role node in again needs both, so a user credential never turns into a
        server token. `quota_exempt`: the owner is an admin (no device quota)."""
        endpoints = tuple(endpoints)
        if role == "server":
            if not proven:
                raise proof_required("registering a server-role node")
            user, tags = server_owned(tags)

        def build() -> Plan[NodeRec]:
            extra = list(also()) if also is not None else []
            existing_id = self.node_by_key.get(public_key)
            if existing_id is not None:
                return self._plan_relogin(
                    self.nodes[existing_id],
                    user,
                    tags,
                    token_digest,
                    endpoints,
                    observed,
                    extra,
                    proven=proven,
                    may_serve=may_serve,
                    token_expires_at=token_expires_at,
                )
            if role != "server" and not tags and not quota_exempt:
                self.check_quota(user)
            try:
                address = self.ipam.allocate(
                    server=role == "server", reserve=self.settings.server_reserve
                )
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
                endpoints=endpoints,
                token_digest=token_digest,
                created_at=now(),
                ephemeral=ephemeral,
                last_seen=now(),
                observed=observed,
                token_expires_at=token_expires_at,
                proven=proven,
            )
            ops: list[Op] = [
                # Claimed, not put: a node id handed out twice (a working set that missed a
                # commit) fails the commit instead of overwriting an acknowledged node.
                Claim("node", str(node.id), to_record(node)),
                Put("meta", "next_node_id", {"value": node.id + 1}),
                # The claim makes the address unique across servers even if two of them
                # allocated it from the same view (the guard already orders them).
                Claim("addr", address, {"node": node.id}),
                *extra,
            ]

            def apply(version: int) -> NodeRec:
                self.next_node_id = max(self.next_node_id, node.id + 1)
                self.addrs[address] = node.id
                self.upsert_node(node, None)
                self.bus.track(node.id, version)
                after = self.peers_of(node.id)
                self.fanout(
                    version,
                    node.id,
                    set(),
                    after,
                    content_changed=False,
                    self_changed=False,
                    facts_changed=True,
                )
                log.info(
                    "node %d %s registered for %s at %s", node.id, node.hostname, user, address
                )
                return node

            return Plan(ops, apply, undo=lambda: self.ipam.release(address))

        return await self.transact(build)

    def check_quota(self, user: str) -> None:
        limit = self.settings.max_devices_per_user
        if self.devices_of(user) >= limit:
            raise ApiError(
                403,
                "device_quota",
                f"user {user!r} already has {limit} devices, the per-user limit "
                "(pcloud-server --max-devices-per-user): remove one of them (DELETE /nodes/ID "
                "or `pcloud logout` on it) or ask an admin to raise the limit",
            )

    def _plan_relogin(
        self,
        node: NodeRec,
        user: str,
        tags: Sequence[str],
        token_digest: str,
        endpoints: tuple[str, ...],
        observed: str | None,
        extra: list[Op],
        *,
        proven: bool,
        may_serve: bool,
        token_expires_at: dt.datetime | None,
    ) -> Plan[NodeRec]:
        if node.role == "server":
            # A server's token unlocks the network's secrets: only a credential that may hold a
            # server, together with the proof of the node's key, logs it in again.
            if not may_serve:
                raise conflict(
                    "public_key_taken",
                    "public_key belongs to a server-role node: only an admin or a server-role "
                    "auth key (with a proof of the node's key) may log it in again",
                )
            if not proven:
                raise proof_required("logging in a server-role node again")
        elif node.user != user or tuple(node.tags) != tuple(tags):
            raise conflict("public_key_taken", "public_key is already registered to another owner")
        # Same device logging in again: same node, same address, fresh node token.
        updated = dataclasses.replace(
            node,
            token_digest=token_digest,
            endpoints=endpoints,
            observed=observed,
            token_expires_at=token_expires_at,
            proven=proven,
        )

        def apply(version: int) -> NodeRec:
            self.upsert_node(updated, self.nodes.get(node.id))
            peers = self.peers_of(node.id)
            self.fanout(version, node.id, peers, peers, content_changed=True, self_changed=False)
            return updated

        return Plan([self.put_node(updated), *extra], apply)

    async def update_node(
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
        proven: bool | None = None,
        token_expires_at: dt.datetime | None = None,
    ) -> NodeRec:
        """Change a node. A change to role server moves it to `server_owned` (its owner's
        credentials no longer reach it); a change back to client drops `tag:server`.
        `proven`/`token_expires_at` record a key proof and the token's renewed expiry."""

        def build() -> Plan[NodeRec]:
            node = self.node(node_id)
            if public_key is not None and public_key != node.public_key:
                owner = self.node_by_key.get(public_key)
                if owner is not None and owner != node_id:
                    raise conflict("public_key_taken", "public_key belongs to another node")
            updated = dataclasses.replace(node)
            if hostname is not None:
                updated.hostname = self.unique_hostname(hostname, node_id)
            if tags is not None:
                updated.tags = tuple(tags)
            if role is not None:
                updated.role = role
            if updated.role == "server" and (role is not None or tags is not None):
                updated.user, updated.tags = server_owned(updated.tags)
            elif role == "client" and node.role == "server":
                updated.tags = tuple(t for t in updated.tags if t != SERVER_TAG)
            if proven is not None:
                updated.proven = proven
            if token_expires_at is not None:
                updated.token_expires_at = token_expires_at
            if endpoints is not None:
                updated.endpoints = tuple(endpoints)
                updated.observed = observed
            if public_key is not None:
                updated.public_key = public_key
            if to_record(updated) == to_record(node):
                return Plan([], lambda _v: node)

            seen_by_peers = _peer_facts(updated) != _peer_facts(node)

            def apply(version: int) -> NodeRec:
                before = self.peers_of(node_id)
                facts_changed = self.upsert_node(updated, node)
                if not seen_by_peers and by_self:
                    return updated  # a token renewal: nothing any netmap shows changed
                after = self.peers_of(node_id)
                self.fanout(
                    version,
                    node_id,
                    before,
                    after,
                    content_changed=True,
                    self_changed=not by_self,
                    facts_changed=facts_changed,
                )
                return updated

            return Plan([self.put_node(updated)], apply)

        return await self.transact(build)

    def plan_delete_nodes(
        self, doomed: Sequence[NodeRec]
    ) -> tuple[list[Op], Callable[[int], None]]:
        """Ops and memory side of removing `doomed` (one node, or every node of a user)."""
        ops: list[Op] = []
        for n in doomed:
            ops += [Delete("node", str(n.id)), Delete("addr", n.address)]

        def apply(version: int) -> None:
            befores = {n.id: self.peers_of(n.id) for n in doomed if n.id in self.nodes}
            for n in doomed:
                if n.id in self.nodes:
                    self.drop_node(self.nodes[n.id], version, befores[n.id] - set(befores))

        return ops, apply

    async def delete_node(self, node_id: int) -> None:
        def build() -> Plan[None]:
            ops, apply = self.plan_delete_nodes([self.node(node_id)])
            return Plan(ops, apply)

        await self.transact(build)


def _peer_facts(node: NodeRec) -> tuple[Any, ...]:
    """What a netmap shows of a node (netmap.build.peer): a change elsewhere wakes nobody."""
    return (
        node.hostname,
        node.user,
        node.role,
        node.tags,
        node.public_key,
        node.address,
        node.endpoints,
        node.observed,
    )
