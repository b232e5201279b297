"""SQLite -> etcd migration against a real etcd: checked by counts and digest, resumable after an
interruption, and never writing over a store it did not start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pcloud.server.store.base import Claim, Put
from pcloud.server.store.migrate import MigrationError, fingerprint, migrate, read_marker
from pcloud.server.store.sqlite import SqliteStore
from tests.support.etcd import Cluster, cluster, needs_etcd

pytestmark = needs_etcd


class Interrupted(Exception):
    pass


@pytest.fixture
def one(tmp_path: Path) -> Iterator[Cluster]:
    with cluster(tmp_path / "etcd", 1) as c:
        yield c


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "state.db")
    store.commit([Put("user", "admin", {"username": "admin", "admin": True, "pw": "ärgon"})], 1)
    for i in range(1, 121):
        address = f"10.0.0.{i}"
        store.commit(
            [
                Put("node", str(i), {"id": i, "address": address, "tags": [], "extra": {}}),
                Claim("addr", address, {"node": i}),
                Put("meta", "next_node_id", {"value": i + 1}),
            ],
            i + 1,
        )
    store.commit([Put("policy", "current", {"text": '{"acls": []}'})], 122)
    yield store
    store.close()


def test_migration_copies_everything_and_checks_it(one: Cluster, sqlite: SqliteStore) -> None:
    target = one.store()
    report = migrate(sqlite, target)
    assert report.source == report.target
    assert report.source.counts == {
        "user": 1, "token": 0, "authkey": 0, "node": 120, "policy": 1, "meta": 1, "addr": 120,
    }  # fmt: skip
    assert report.written == 243 and not report.resumed and not report.already_done
    fresh = one.store().load()
    assert fresh.records == sqlite.load().records and fresh.version == 122
    assert fingerprint(fresh).digest == report.source.digest
    assert (read_marker(target) or {}).get("state") == "done"
    again = migrate(sqlite, one.store())
    assert again.already_done and again.written == 0
    # The servers then commit on top of the migrated store as usual.
    live = one.store()
    live.load()
    live.commit([Put("user", "bob", {"username": "bob"})], 123)


def test_migration_resumes_after_an_interruption(one: Cluster, sqlite: SqliteStore) -> None:
    target = one.store(max_txn_ops=40)  # small batches, so there is a middle to stop in

    def stop_midway(written: int) -> None:
        if written >= 80:
            raise Interrupted

    with pytest.raises(Interrupted):
        migrate(sqlite, target, after_batch=stop_midway)
    assert (read_marker(target) or {}).get("state") == "copying"
    partial = one.store().load()
    assert partial.version == 0  # the counter is written last: the store is visibly incomplete
    assert 0 < sum(len(r) for r in partial.records.values()) < 243

    report = migrate(sqlite, one.store(max_txn_ops=40))
    assert report.resumed and report.written == 243 - 80
    assert report.target == report.source == fingerprint(sqlite.load())
    assert (read_marker(target) or {}).get("state") == "done"


def test_a_source_changed_during_the_copy_fails_the_check_then_resumes(
    one: Cluster, sqlite: SqliteStore
) -> None:
    def write_meanwhile(written: int) -> None:
        if written == 40:
            sqlite.commit([Put("user", "late", {"username": "late"})], 123)

    with pytest.raises(MigrationError, match="changed during the copy|check failed"):
        migrate(sqlite, one.store(max_txn_ops=40), after_batch=write_meanwhile)
    report = migrate(sqlite, one.store())
    assert report.resumed and "late" in one.store().load().records["user"]


def test_refuses_a_store_it_did_not_write(one: Cluster, sqlite: SqliteStore) -> None:
    other = one.store()
    other.load()
    other.commit([Put("user", "someone", {"username": "someone"})], 1)
    with pytest.raises(MigrationError, match="refusing to overwrite"):
        migrate(sqlite, one.store())
    assert set(one.store().load().records["user"]) == {"someone"}


def test_refuses_to_redo_over_a_finished_migration_of_another_state(
    one: Cluster, sqlite: SqliteStore
) -> None:
    migrate(sqlite, one.store())
    sqlite.commit([Put("user", "diverged", {"username": "diverged"})], 123)
    with pytest.raises(MigrationError, match="finished migration"):
        migrate(sqlite, one.store())
    assert "diverged" not in one.store().load().records["user"]
