"""Replaying another coordination server's commit (one etcd watch batch) on this working set.

Records go into memory with the indexes and IPAM kept in step, and the same before/after
fan-out a local change makes follows, so long polls held here wake for changes made anywhere.
The caller (sync.StoreSync) holds the state's lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..model import NodeRec, from_record
from .transact import Transactions
from .working_set import parse_stored

if TYPE_CHECKING:  # (the etcd client, httpx with it, is imported only for an etcd store)
    from ..store.etcd_watch import WatchBatch


class Replay(Transactions):
    """Foreign commits into the working set."""

    def apply_foreign(self, batch: WatchBatch) -> None:
        """Apply one foreign commit to memory and fan it out (caller holds `lock`)."""
        version = self.stamp()
        if batch.version is not None:
            self.store_version = max(self.store_version, batch.version)
        servers_changed = False
        for ch in batch.changes:
            if ch.kind == "node":
                self._node_replayed(version, int(ch.key), ch.value)
            elif ch.kind == "policy":
                text = None if ch.value is None else ch.value.get("text")
                if ch.key == "current" and text != self.policy_text:
                    self.policy_applied(parse_stored(text), version)
            else:
                servers_changed |= self.put_record(ch.kind, ch.key, ch.value)
        if servers_changed:
            self.servers_changed(version)

    def _node_replayed(self, version: int, node_id: int, value: dict[str, Any] | None) -> None:
        old = self.nodes.get(node_id)
        if value is None:
            if old is not None:
                self.drop_node(old, version, self.peers_of(node_id))
            return
        node = from_record(NodeRec, value)
        if old is not None and old.last_seen is not None:
            node.last_seen = old.last_seen  # presence is this server's own knowledge
        self.node_stored(version, node, old)
