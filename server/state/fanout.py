"""The fan-out: after a change is in memory, exactly the nodes whose view changed hear of it.

Each change gets a new netmap version (`stamp`); `fanout` logs one node's change for itself
and for every node whose view of it changed, and `netmap.broadcast.Broadcaster` (`bus`) wakes
their long polls. `vouches` says whether a poll's `since` can be answered with a delta. The
other fan-outs: a node removed (`drop_node`), the coordination-server list (`servers_changed`),
a policy swap (`policy_applied`: each node's view diff) and a presence flip (`presence_changed`).
"""

from __future__ import annotations

import logging
from typing import Any

from ..config import Settings
from ..model import NodeRec, now
from ..netmap.broadcast import Broadcaster, VersionClock
from ..netmap.shared import SeenBy, SharedTails
from ..policy.document import Policy
from ..policy.engine import PeerIndex
from ..policy.filter import signature
from ..presence import Presence
from .working_set import WorkingSet

log = logging.getLogger("pcloud.server.state")

# (the version it was computed at, the new peer index, each node's view change) for a policy
# worked out off the loop (api.policy_work); a change is (gains, loses[, True]): see api/acl.py.
PreparedPolicy = tuple[int, PeerIndex, dict[int, Any]]


class FanOut(WorkingSet):
    """The working set plus the netmap versions and the per-node change logs."""

    def __init__(self, settings: Settings, presence: Presence) -> None:
        super().__init__(settings)
        self.clock = VersionClock()
        self.bus = Broadcaster(0)
        self.delta_tails = SharedTails()  # deltas' shared bytes (netmap.build)
        self.seen_by = SeenBy()  # who sees a changed peer, per version (netmap.build)
        self.presence = presence
        # Set when the server stops: long polls answer at once instead of waiting.
        self.draining = False

    def reset_logs(self) -> None:
        """After a full (re)load: every node's log starts over, so its next poll gets a full
        map; nodes gone meanwhile are forgotten."""
        self.version = self.clock.next()
        self.bus.reset(self.version)
        for node_id in set(self.bus.tracked()) - set(self.nodes):
            self.bus.forget(node_id)
        for node_id in self.nodes:
            self.bus.track(node_id, self.version)
        self.presence.reloaded(self.nodes)

    def stamp(self) -> int:
        """A new netmap version for a change about to be fanned out."""
        self.version = self.clock.next()
        return self.version

    def vouches(self, node_id: int, since: int) -> bool:
        """Whether this process can answer `since` with a delta (else: a full map)."""
        return self.clock.mine(since) and self.bus.can_delta(node_id, since, self.version)

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

    def node_stored(self, version: int, node: NodeRec, old: NodeRec | None) -> None:
        """A node record committed elsewhere (the watch): into memory, then fanned out."""
        before = self.peers_of(node.id) if old is not None else set()
        facts_changed = self.upsert_node(node, old)
        after = self.peers_of(node.id)
        if old is None:
            self.bus.track(node.id, version)
        self.fanout(
            version,
            node.id,
            before,
            after,
            content_changed=old is not None,
            self_changed=old is not None,
            facts_changed=facts_changed,
        )

    def drop_node(self, node: NodeRec, version: int, before: set[int]) -> None:
        """A deleted node leaves memory; the nodes in `before` hear it is gone."""
        self.forget_node(node)
        self.presence.forget(node.id)
        for peer in before:
            # SELF too (under a document): the node's address leaves the peer's packet filter.
            self.bus.record(version, peer, removed=(node.id,), self_changed=self.policy is not None)
        self.bus.forget(node.id)
        log.info("node %d %s removed", node.id, node.hostname)

    def servers_changed(self, version: int) -> None:
        """Every node hears of a coordination server added or gone (rare: O(nodes) is fine)."""
        self.servers_json = None
        for node_id in self.bus.tracked():
            self.bus.record(version, node_id, self_changed=True)

    def presence_changed(self, node_id: int) -> None:
        """A node went online or offline on this server: its peers hear of it."""
        self.nodes[node_id].last_seen = now()
        version = self.stamp()
        peers = self.peers_of(node_id)
        self.fanout(version, node_id, peers, peers, content_changed=True, self_changed=False)

    def policy_applied(
        self, policy: Policy | None, version: int, prepared: PreparedPolicy | None = None
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
