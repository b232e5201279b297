"""`pcloud-server migrate-to-etcd` as the ha-enable job runs it (`backend/ha/migration.py`, a
subprocess reporting JSON lines) against a real etcd: progress and report reach the backend, a
refusal arrives as the server's reason, and a finished copy is replaced only when asked."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcloud.backend.ha.migration import Copied, MigrationFailed, migrate_to_etcd
from pcloud.server.store.base import Claim, Put
from pcloud.server.store.sqlite import SqliteStore
from pcloud.shared.etcd.member import MemberTls
from tests.support.etcd import Cluster, cluster, needs_etcd

pytestmark = needs_etcd


@pytest.fixture
def one(tmp_path: Path) -> Iterator[Cluster]:
    with cluster(tmp_path / "etcd", 1) as c:
        yield c


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "pcloud.db"
    store = SqliteStore(path)
    store.commit([Put("user", "admin", {"username": "admin", "admin": True})], 1)
    for i in range(1, 4):
        node = {"id": i, "address": f"10.0.0.{i}", "tags": [], "extra": {}}
        store.commit([Put("node", str(i), node), Claim("addr", f"10.0.0.{i}", {"node": i})], i + 1)
    store.close()
    return path


def run(db: Path, one: Cluster, progress: list[int], **kw: bool) -> Copied:
    tls = one.client_tls
    return asyncio.run(migrate_to_etcd(db, one.endpoints(), tls, progress.append, **kw))


def test_the_job_copies_through_the_server_subcommand(one: Cluster, db: Path) -> None:
    progress: list[int] = []
    copied = run(db, one, progress)
    assert copied.records == 7 and copied.counts["node"] == 3 and copied.counts["addr"] == 3
    assert copied.source_digest == copied.target_digest and not copied.resumed
    assert progress and progress[-1] == 7
    assert set(one.store().load().records["node"]) == {"1", "2", "3"}

    store = SqliteStore(db)
    store.commit([Put("user", "later", {"username": "later"})], 5)
    store.close()
    with pytest.raises(MigrationFailed, match="finished migration"):
        run(db, one, [], replace_finished=False)
    assert "later" not in one.store().load().records["user"]
    again = run(db, one, [])  # the job's way: no server served from that copy, so redo it
    assert again.records == 8 and "later" in one.store().load().records["user"]


def test_a_missing_store_is_refused_with_its_path(tmp_path: Path) -> None:
    tls = MemberTls(tmp_path / "ca.pem", tmp_path / "m.pem", tmp_path / "m.key")
    copy = migrate_to_etcd(tmp_path / "none.db", ["https://127.0.0.1:1"], tls, print)
    with pytest.raises(MigrationFailed, match=f"no store at {tmp_path / 'none.db'}"):
        asyncio.run(copy)
