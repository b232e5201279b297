"""EtcdStore against a real etcd (Debian's etcd-server) on loopback: round trip, restart,
revision-guarded commits between two "servers", address claims under a race, watch, big txns."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pcloud.server.security.tls import TlsFiles, ensure_leaf
from pcloud.server.store.base import (
    Claim,
    ClaimTaken,
    Conflict,
    Delete,
    Put,
    StoreError,
    Unavailable,
)
from pcloud.server.store.etcd import EtcdStore, WatchBatch
from pcloud.shared.etcd.gateway import ssl_context
from tests.support.etcd import Cluster, cluster, needs_etcd

pytestmark = needs_etcd


@pytest.fixture
def one(tmp_path: Path) -> Iterator[Cluster]:
    with cluster(tmp_path, 1) as c:
        yield c


def test_round_trip_and_restart_persistence(one: Cluster) -> None:
    a = one.store()
    assert a.load().version == 0
    a.commit(
        [
            Put("user", "alice", {"username": "alice", "admin": True}),
            Put("node", "1", {"id": 1, "address": "10.0.0.1", "tags": ["tag:x"]}),
            Put("meta", "next_node_id", {"value": 2}),
            Put("policy", "current", {"text": "{}"}),
            Claim("addr", "10.0.0.1", {"node": 1}),
        ],
        1,
    )
    a.commit([Put("user", "bob", {"username": "bob", "admin": False})], 2)
    a.commit([Delete("user", "bob")], 3)

    member = one.members["m1"]
    member.stop()
    assert not member.running()
    member.start()
    member.wait_healthy(20)

    snap = one.store().load()
    assert snap.version == 3
    assert snap.records["user"] == {"alice": {"username": "alice", "admin": True}}
    assert snap.records["node"]["1"]["tags"] == ["tag:x"]
    assert snap.records["meta"] == {"next_node_id": {"value": 2}}  # the counter is not a record
    assert snap.records["addr"] == {"10.0.0.1": {"node": 1}}
    assert snap.records["policy"]["current"]["text"] == "{}"


def test_concurrent_commits_one_wins_and_no_update_is_lost(one: Cluster) -> None:
    a, b = one.store(), one.store()
    a.load()
    b.load()
    gate = threading.Barrier(2)
    outcome: dict[str, str] = {}

    def write(name: str, store: EtcdStore) -> None:
        gate.wait()
        try:
            store.commit([Put("user", name, {"username": name})], 1)
            outcome[name] = "ok"
        except Conflict as exc:
            outcome[name] = f"conflict@{exc.revision}/{exc.version}"

    threads = [threading.Thread(target=write, args=(n, s)) for n, s in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(v == "ok" for v in outcome.values()) == [False, True]
    loser_name, loser = ("a", a) if outcome["a"] != "ok" else ("b", b)
    winner_rev = (b if loser is a else a).revision
    assert outcome[loser_name] == f"conflict@{winner_rev}/1"
    # The loser reloads (sees the winner's write) and retries on top of it.
    snap = loser.load()
    assert snap.version == 1 and len(snap.records["user"]) == 1
    loser.commit([Put("user", loser_name, {"username": loser_name})], snap.version + 1)
    final = one.store().load()
    assert set(final.records["user"]) == {"a", "b"} and final.version == 2


def test_claim_taken_fails_the_whole_commit(one: Cluster) -> None:
    a, b = one.store(), one.store()
    a.load()
    a.commit([Put("node", "1", {"id": 1}), Claim("addr", "10.0.0.5", {"node": 1})], 1)
    b.load()  # b is up to date: the revision guard passes, only the claim can fail
    with pytest.raises(ClaimTaken) as info:
        b.commit([Put("node", "2", {"id": 2}), Claim("addr", "10.0.0.5", {"node": 2})], 2)
    assert info.value.key == "10.0.0.5"
    snap = one.store().load()
    assert "2" not in snap.records["node"] and snap.version == 1
    assert snap.records["addr"]["10.0.0.5"] == {"node": 1}


async def _register_many(store: EtcdStore, server: str, count: int, net: str) -> int:
    """One "server" registering `count` nodes: lowest free address in its view, retried on
    Conflict/ClaimTaken after a reload, as the State will. Returns the retries it needed."""
    retries = 0
    done = 0
    snap = await store.aload()
    while done < count:
        used = {v["address"] for v in snap.records["node"].values()}
        address = next(str(h) for h in ipaddress.ip_network(net).hosts() if str(h) not in used)
        node_id = int(snap.records["meta"].get("next_node_id", {}).get("value", 1))
        ops = [
            Put("node", str(node_id), {"id": node_id, "address": address, "server": server}),
            Claim("addr", address, {"node": node_id}),
            Put("meta", "next_node_id", {"value": node_id + 1}),
        ]
        try:
            await store.acommit(ops, snap.version + 1)
        except (Conflict, ClaimTaken):
            retries += 1
            snap = await store.aload()
            continue
        snap.records["node"][str(node_id)] = dict(ops[0].value)  # type: ignore[union-attr]
        snap.records["meta"]["next_node_id"] = {"value": node_id + 1}
        snap.version += 1
        done += 1
    return retries


async def test_address_claims_race_never_duplicates(one: Cluster) -> None:
    a, b = one.store(), one.store()
    retries = await asyncio.gather(
        _register_many(a, "a", 25, "10.0.0.0/24"), _register_many(b, "b", 25, "10.0.0.0/24")
    )
    snap = one.store().load()
    addresses = [n["address"] for n in snap.records["node"].values()]
    assert len(addresses) == 50 and len(set(addresses)) == 50
    assert {n["server"] for n in snap.records["node"].values()} == {"a", "b"}
    assert {ip: c["node"] for ip, c in snap.records["addr"].items()} == {
        n["address"]: n["id"] for n in snap.records["node"].values()
    }
    assert snap.version == 50
    assert sum(retries) > 0  # they really raced
    await a.aclose()
    await b.aclose()


async def test_watch_delivers_other_writers_changes_only(one: Cluster) -> None:
    a, b = one.store(), one.store()
    a.load()
    b.load()
    got: asyncio.Queue[tuple[float, WatchBatch]] = asyncio.Queue()

    async def follow() -> None:
        async for batch in b.watch():
            got.put_nowait((time.perf_counter(), batch))

    task = asyncio.create_task(follow())
    try:
        b.commit([Put("user", "own", {"username": "own"})], 1)  # b's own: never delivered
        a.load()
        latencies = []
        for i in range(20):
            start = time.perf_counter()
            await a.acommit([Put("node", str(i), {"id": i})], a.version + 1)
            at, batch = await asyncio.wait_for(got.get(), 5)
            latencies.append(at - start)
            assert batch.version == a.version and batch.revision == a.revision
            assert [(c.kind, c.key, c.value) for c in batch.changes] == [
                ("node", str(i), {"id": i})
            ]
            b.advance(batch)
        await a.acommit([Delete("node", "0")], a.version + 1)
        _, batch = await asyncio.wait_for(got.get(), 5)
        assert [(c.kind, c.key, c.value) for c in batch.changes] == [("node", "0", None)]
        b.advance(batch)
        # Having applied every foreign batch, b commits on top without a reload.
        b.commit([Put("user", "after", {"username": "after"})], b.version + 1)
        assert got.empty()
        latencies.sort()
        print(f"watch latency p50 {latencies[10] * 1e3:.1f} ms, max {latencies[-1] * 1e3:.1f} ms")
        assert latencies[10] < 0.5
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await a.aclose()
        await b.aclose()


def test_commit_over_128_ops_is_one_txn_and_over_the_limit_is_refused(one: Cluster) -> None:
    a = one.store()
    a.load()
    ops = [Put("node", str(i), {"id": i}) for i in range(600)]
    start = time.perf_counter()
    a.commit(ops, 1)
    print(f"600-op commit {1e3 * (time.perf_counter() - start):.1f} ms")
    assert len(one.store().load().records["node"]) == 600
    with pytest.raises(StoreError, match="max_txn_ops=1024"):
        a.commit([Put("node", str(i), {"id": i}) for i in range(1100)], 2)
    assert one.store().load().version == 1


def test_commit_latency(one: Cluster) -> None:
    a = one.store()
    a.load()
    times = []
    for i in range(200):
        start = time.perf_counter()
        a.commit([Put("node", str(i), {"id": i}), Put("meta", "n", {"v": i})], i + 1)
        times.append(time.perf_counter() - start)
    times.sort()
    print(f"commit p50 {times[100] * 1e3:.2f} ms p99 {times[198] * 1e3:.2f} ms (1 member, TLS)")
    assert times[100] < 0.1


def test_unreachable_store_fails_fast_and_clearly(tmp_path: Path) -> None:
    store = EtcdStore(["http://127.0.0.1:9", "http://127.0.0.1:10"], timeout=0.5)
    start = time.monotonic()
    with pytest.raises(Unavailable, match="etcd unavailable"):
        store.load()
    assert time.monotonic() - start < 2
    store.close()


def test_only_ca_signed_client_certificates_get_in(one: Cluster, tmp_path: Path) -> None:
    url = one.specs["m1"].client_url + "/v3/kv/range"
    ca = one.client_tls.ca
    with pytest.raises(httpx.HTTPError):
        httpx.post(url, json={"key": "Lw=="}, verify=ssl_context(ca))
    # A server's HTTPS leaf is CA-signed but for serverAuth only: not a client of the store.
    files = TlsFiles(one.ca.ca_cert, one.ca.ca_key, tmp_path / "srv.pem", tmp_path / "srv.key")
    ensure_leaf(files, ["127.0.0.1"])
    with pytest.raises(httpx.HTTPError):
        httpx.post(url, json={"key": "Lw=="}, verify=ssl_context(ca, files.cert, files.key))
    answer = httpx.post(
        url, json={"key": "Lw=="}, verify=ssl_context(ca, one.client_tls.cert, one.client_tls.key)
    )
    assert answer.status_code == 200
