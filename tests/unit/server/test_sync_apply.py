"""Applying another server's commit (a watch batch) to the working set: memory, IPAM, fan-out."""

from __future__ import annotations

from pathlib import Path

from pcloud.server.config import Listen, Settings
from pcloud.server.model import NodeRec, now, to_record
from pcloud.server.state import State
from pcloud.server.store.etcd_watch import Change, WatchBatch
from pcloud.server.store.sqlite import SqliteStore


def _state(tmp_path: Path) -> State:
    settings = Settings(state_dir=tmp_path, listen=(Listen("127.0.0.1", 1),))
    return State(settings, SqliteStore(tmp_path / "pcloud.db"))


def _node(node_id: int, address: str, user: str = "alice") -> NodeRec:
    return NodeRec(
        id=node_id,
        public_key=f"key{node_id}",
        hostname=f"h{node_id}",
        user=user,
        role="client",
        tags=(),
        address=address,
        endpoints=(),
        token_digest=f"tok{node_id}",
        created_at=now(),
    )


def _batch(revision: int, version: int, *changes: tuple[str, str, object]) -> WatchBatch:
    batch = WatchBatch(revision=revision, version=version, writer="other")
    batch.changes = [Change(k, key, v, revision) for k, key, v in changes]  # type: ignore[arg-type]
    return batch


def test_foreign_nodes_fan_out_and_keep_ipam_in_step(tmp_path: Path) -> None:
    state = _state(tmp_path)
    n1, n2 = _node(1, "10.0.0.2"), _node(2, "10.0.0.3")
    state.apply_foreign(
        _batch(5, 1, ("node", "1", to_record(n1)), ("addr", "10.0.0.2", {"node": 1}))
    )
    v1 = state.version
    state.apply_foreign(
        _batch(6, 2, ("node", "2", to_record(n2)), ("meta", "next_node_id", {"value": 3}))
    )
    assert state.store_version == 2 and state.next_node_id == 3
    assert state.node_by_token["tok2"] == 2 and state.peers_of(1) == {2}
    # Node 1's log says node 2 appeared after v1; a poll there gets it as a delta.
    assert state.vouches(1, v1) and state.bus.delta(1, v1).changed == {2}
    # Addresses taken elsewhere are never handed out here.
    assert state.ipam.allocate(server=False) == "10.0.0.4"
    state.apply_foreign(_batch(7, 3, ("node", "2", None), ("addr", "10.0.0.3", None)))
    assert 2 not in state.nodes and state.bus.delta(1, v1).removed == {2}
    assert state.ipam.allocate(server=False) == "10.0.0.3"  # reused after the deletion


def test_foreign_versions_are_not_vouched_for(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.apply_foreign(_batch(5, 1, ("node", "1", to_record(_node(1, "10.0.0.2")))))
    other = State(state.settings, SqliteStore(tmp_path / "other.db"))
    other.clock.instance = (state.clock.instance + 1) % 4096
    foreign = other.clock.next()
    assert not state.vouches(1, foreign)
    assert state.vouches(1, state.version)
