"""SqliteStore: the Claim op (create-if-absent, a UNIQUE check) and all-or-nothing commits."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcloud.server.store.base import Claim, ClaimTaken, Delete, Put
from pcloud.server.store.sqlite import SqliteStore


def test_claim_is_unique_and_fails_the_whole_commit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.commit([Put("node", "1", {"id": 1}), Claim("addr", "10.0.0.1", {"node": 1})], 1)
    with pytest.raises(ClaimTaken) as info:
        store.commit(
            [
                Put("node", "2", {"id": 2}),
                Claim("addr", "10.0.0.2", {"node": 2}),
                Claim("addr", "10.0.0.1", {"node": 2}),
            ],
            2,
        )
    assert (info.value.kind, info.value.key) == ("addr", "10.0.0.1")
    snap = store.load()
    assert snap.version == 1
    assert snap.records["node"] == {"1": {"id": 1}}
    assert snap.records["addr"] == {"10.0.0.1": {"node": 1}}
    # Released by a Delete, the address can be claimed again.
    store.commit([Delete("addr", "10.0.0.1"), Delete("node", "1")], 2)
    store.commit([Claim("addr", "10.0.0.1", {"node": 3})], 3)
    assert store.load().records["addr"] == {"10.0.0.1": {"node": 3}}
    store.close()


def test_a_store_reopened_keeps_claims(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.commit([Claim("addr", "10.0.0.9", {"node": 9})], 1)
    store.close()
    again = SqliteStore(tmp_path / "s.db")
    with pytest.raises(ClaimTaken):
        again.commit([Claim("addr", "10.0.0.9", {"node": 10})], 2)
    assert again.load().version == 1
    again.close()
