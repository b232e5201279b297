"""The server's one door for changes: in-memory working set, write-through store, fan-out.

Every mutation is a `Plan` run by `transact`: built from the working set without touching it
(its ops), committed as one store transaction, then applied to memory, after which exactly the
nodes whose view changed get a log entry and a wake-up (netmap.broadcast). Reads never touch the
store. Under etcd several servers write the same store: a commit that lost the race (`Conflict`)
waits until this server's watch (sync.py) has applied the winner's change, rebuilds its plan from
the fresh working set and tries again; `Unavailable` (no quorum) is a 503 with nothing applied.
Accounts live in `accounts.py`, presence in `presence.py`, netmap answers in `netmap.build`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .config import Settings
from .errors import ApiError, conflict, not_found
from .ipam import Exhausted, Ipam
from .model import AuthKeyRec, NodeRec, TokenRec, UserRec, from_record, now, to_record
from .netmap.broadcast import Broadcaster, VersionClock
from .policy.document import Policy, parse_policy
from .policy.engine import NodeFacts, PeerIndex
from .policy.filter import FilterCache, signature
from .presence import Presence
from .protocol import INFRA_OWNER, SERVER_TAG
from .security.nodeproof import proof_required
from .store.base import (
    Claim,
    ClaimTaken,
    Conflict,
    Delete,
    Op,
    Put,
    Snapshot,
    Store,
    StoreError,
    Unavailable,
)

if TYPE_CHECKING:
    from .sync import StoreSync

log = logging.getLogger("pcloud.server.state")

T = TypeVar("T")

# How long a change keeps retrying while other servers win the race for the store; a conflict
# means someone else made progress, so this only bounds a hot spot, never a deadlock.
RETRY_DEADLINE_S = 5.0
SERVER_PREFIX = "server:"  # meta records "server:<hostname>": {"urls": [...], "instance": n}


def facts(node: NodeRec) -> NodeFacts:
    return NodeFacts(
        id=node.id, user=node.user, role=node.role, tags=tuple(node.tags), address=node.address
    )


def server_owned(tags: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """Owner and tags of a server-role node: owned by `tag:server` (first, plus any other tags),
    never by a person, so no user credential reaches the network's infrastructure."""
    return INFRA_OWNER, (SERVER_TAG, *[t for t in tags if t != SERVER_TAG])


def store_unavailable(exc: Exception) -> ApiError:
    return ApiError(
        503,
        "store_unavailable",
        f"the coordination store has no quorum: too few of its etcd members answer, so it "
        f"cannot take changes now ({exc}); reads keep being served; retry once the other "
        "servers are back",
    )


@dataclass
class Plan(Generic[T]):
    """One change: the ops to commit, what to do in memory after the commit (given the new
    netmap version), and how to give back anything reserved while planning (an address)."""

    ops: list[Op]
    apply: Callable[[int], T]
    undo: Callable[[], None] | None = None


class State(Presence):
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.store_kind: str = getattr(store, "kind", "sqlite")
        self.clock = VersionClock()
        self.lock = asyncio.Lock()
        # Set when the server stops: long polls answer at once instead of waiting.
        self.draining = False
        self.sync: StoreSync | None = None
        self.bus = Broadcaster(0)
        self.nodes: dict[int, NodeRec] = {}
        self.init_presence()
        self.load(store.load())

    # ---- loading --------------------------------------------------------------------------

    def load(self, snap: Snapshot) -> None:
        """(Re)build the working set from a full snapshot: at start and after a resync, when
        every node's log is reset so that its next poll gets a full map."""
        self.store_version = snap.version
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
        self.policy_text: str | None = rec["policy"].get("current", {}).get("text")
        self.policy = self._parse_stored(self.policy_text)
        self.index = PeerIndex(self.policy, self.admins())
        self.index.set_nodes(facts(n) for n in self.nodes.values())
        # Claimed addresses without a node (a claim orphaned by hand) are never handed out.
        self.addrs: dict[str, int] = {a: int(v.get("node", 0)) for a, v in rec["addr"].items()}
        used = [n.address for n in self.nodes.values()] + list(self.addrs)
        self.ipam = Ipam(self.settings.net, used)
        self.version = self.clock.next()
        self.bus.reset(self.version)
        for node_id in set(self.bus.tracked()) - set(self.nodes):
            self.bus.forget(node_id)
        for node_id in self.nodes:
            self.bus.track(node_id, self.version)
        self.presence_reloaded()

    @staticmethod
    def _parse_stored(text: str | None) -> Policy | None:
        if text is None:
            return None
        try:
            return parse_policy(text)
        except Exception:
            # It passed validation when written; a newer parser may be stricter. Keep serving
            # with the default policy rather than refuse to start, and say so loudly.
            log.error("stored policy no longer parses; serving the default policy until fixed")
            return None

    # ---- plumbing -------------------------------------------------------------------------

    def admins(self) -> set[str]:
        return {u.username for u in self.users.values() if u.admin}

    def stamp(self) -> int:
        """A new netmap version for a change about to be fanned out."""
        self.version = self.clock.next()
        return self.version

    def vouches(self, node_id: int, since: int) -> bool:
        """Whether this process can answer `since` with a delta (else: a full map)."""
        return self.clock.mine(since) and self.bus.can_delta(node_id, since, self.version)

    async def _write(self, ops: Sequence[Op]) -> None:
        version = self.store_version + 1
        acommit = getattr(self.store, "acommit", None)
        if acommit is not None:
            await acommit(ops, version)
        else:
            # SQLite commits in well under a millisecond: not worth a thread hop.
            self.store.commit(ops, version)
        self.store_version = version

    async def transact(self, build: Callable[[], Plan[T]]) -> T:
        """Build, commit and apply one change; rebuild and retry when another server won."""
        deadline = time.monotonic() + RETRY_DEADLINE_S
        while True:
            async with self.lock:
                plan = build()
                if not plan.ops:
                    return plan.apply(self.version)  # nothing to change
                try:
                    await self._write(plan.ops)
                except (Conflict, ClaimTaken, StoreError) as exc:
                    if plan.undo is not None:
                        plan.undo()
                    if isinstance(exc, Unavailable):
                        raise store_unavailable(exc) from None
                    if isinstance(exc, ClaimTaken) and exc.kind == "addr":
                        # Taken but unknown here: an orphan claim. Never hand it out again.
                        log.warning("address %s is claimed by no known node; skipping it", exc.key)
                        self.ipam.mark(exc.key)
                        revision = 0
                    elif isinstance(exc, Conflict):
                        revision = exc.revision
                    else:
                        raise
                else:
                    return plan.apply(self.stamp())
            if time.monotonic() > deadline:
                raise ApiError(
                    503, "store_busy", "other coordination servers kept changing the store; retry"
                )
            if revision:
                await self.catch_up(revision, deadline)

    async def catch_up(self, revision: int, deadline: float) -> None:
        """Wait until the working set includes the store's change at `revision`."""
        if self.sync is not None:
            if not await self.sync.reached(revision, max(0.05, deadline - time.monotonic())):
                raise store_unavailable(RuntimeError("this server's watch on the store is behind"))
            return
        # No watch (the admin command's in-process state): read everything again.
        aload = getattr(self.store, "aload", None)
        try:
            snap = await aload() if aload is not None else self.store.load()
        except Unavailable as exc:
            raise store_unavailable(exc) from None
        async with self.lock:
            self.load(snap)

    async def change(self, ops: Callable[[], Sequence[Op]], apply: Callable[[], T]) -> T:
        """A change whose memory side needs no version (accounts, K3s record)."""
        return await self.transact(lambda: Plan(list(ops()), lambda _v: apply()))

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
        facts_changed: bool = False,
    ) -> None:
        """Log one node's change for itself and for every node whose view of it changed.
        `facts_changed` (address, user, role or tags: what the policy reads) also tells each
        of those nodes that its packet filter may have changed (the SELF item)."""
        self.peer_json.pop(node_id, None)
        # Under the default policy every filter is the same constant rule: nothing to resend.
        if facts_changed and self.policy is not None:
            for peer in before | after:
                self.bus.record(version, peer, self_changed=True)
            self_changed = True
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

    def server_urls(self) -> list[str]:
        """This server's URLs first, then every other coordination server's (netmap `servers`)."""
        urls = self.settings.server_urls()
        for host in sorted(self.servers):
            if host != self.settings.hostname:
                urls += [u for u in self.servers[host].get("urls", []) if u not in urls]
        return urls

    def servers_changed(self, version: int) -> None:
        """Every node hears of a coordination server added or gone (rare: O(nodes) is fine)."""
        for node_id in self.bus.tracked():
            self.bus.record(version, node_id, self_changed=True)

    # ---- nodes in memory ------------------------------------------------------------------

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

    def _count_device(self, node: NodeRec, delta: int) -> None:
        if node.tags:
            return  # a tagged node is owned by its tags, not by its creator
        left = self._devices.get(node.user, 0) + delta
        if left > 0:
            self._devices[node.user] = left
        else:
            self._devices.pop(node.user, None)

    def devices_of(self, user: str) -> int:
        return self._devices.get(user, 0)

    def _hostname_add(self, name: str) -> None:
        self._hostnames[name] = self._hostnames.get(name, 0) + 1

    def _hostname_drop(self, name: str) -> None:
        left = self._hostnames.get(name, 0) - 1
        if left > 0:
            self._hostnames[name] = left
        else:
            self._hostnames.pop(name, None)

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

    def drop_node(self, node: NodeRec, version: int, before: set[int]) -> None:
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
        self.presence_forget(node.id)
        for peer in before:
            # SELF too (under a document): the node's address leaves the peer's packet filter.
            self.bus.record(version, peer, removed=(node.id,), self_changed=self.policy is not None)
        self.bus.forget(node.id)
        log.info("node %d %s removed", node.id, node.hostname)

    def node(self, node_id: int) -> NodeRec:
        node = self.nodes.get(node_id)
        if node is None:
            raise not_found(f"node {node_id}")
        return node

    # ---- node changes ---------------------------------------------------------------------

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
                self.put_node(node),
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

    # ---- policy ---------------------------------------------------------------------------

    async def set_policy(
        self,
        policy: Policy | None,
        prepared: tuple[int, PeerIndex, dict[int, Any]] | None = None,
    ) -> int:
        """Commit a policy. `prepared` = (the version it was computed at, the new index, each
        node's view change), worked out off the loop (api.policy_work); used when nothing
        changed since, else the diff is made here."""

        def build() -> Plan[int]:
            op: Op = (
                Put("policy", "current", {"text": policy.text})
                if policy is not None
                else Delete("policy", "current")
            )
            ready = prepared if prepared is not None and prepared[0] == self.version else None
            return Plan([op], lambda version: self.policy_applied(policy, version, ready))

        return await self.transact(build)

    def policy_applied(
        self,
        policy: Policy | None,
        version: int,
        prepared: tuple[int, PeerIndex, dict[int, Any]] | None = None,
    ) -> int:
        """Swap in a committed policy; log the view change of every node whose view changed."""
        old_index = self.index
        if prepared is not None:
            _, new_index, diff = prepared
            new_index.set_admins(self.admins())
            self.index = new_index
            self.policy = policy
            self.policy_text = policy.text if policy is not None else None
            for node_id, change in diff.items():
                if node_id in self.nodes:
                    gains, loses, *refilter = change  # (gains, loses[, True]): see api/acl.py
                    self.bus.record(
                        version, node_id, changed=gains, removed=loses, self_changed=bool(refilter)
                    )
            log.info("policy %s; %d nodes' views changed", "set" if policy else "reset", len(diff))
            return len(diff)
        new_index = self.index.copy()
        new_index.set_policy(policy)
        self.index = new_index
        self.policy = policy
        self.policy_text = policy.text if policy is not None else None
        changed = 0
        for node_id in self.nodes:
            before = old_index.peers_of(node_id)
            after = new_index.peers_of(node_id)
            # A port-only change leaves the peers alone but not the packet filter.
            refilter = signature(old_index, node_id) != signature(new_index, node_id)
            if before != after or refilter:
                changed += 1
                self.bus.record(
                    version,
                    node_id,
                    changed=after - before,
                    removed=before - after,
                    self_changed=refilter,
                )
        log.info("policy %s; %d nodes' views changed", "set" if policy else "reset", changed)
        return changed

    # ---- start and stop -------------------------------------------------------------------

    def close(self) -> None:
        self.presence_close()
        self.store.close()


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


def expired(at: dt.datetime) -> bool:
    return at <= now()


def require(cond: bool, status: int, code: str, message: str) -> None:
    if not cond:
        raise ApiError(status, code, message)
