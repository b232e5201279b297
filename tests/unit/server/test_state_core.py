"""The server core without HTTP: the state's node changes, IPAM, fan-out and netmap building, over
a real SQLite store (each change written through, then read back by a fresh state).

Tier: unit (no app, no process): what the state decides and whom it tells, in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pcloud.server.config import Listen, Settings
from pcloud.server.errors import ApiError
from pcloud.server.model import NodeRec
from pcloud.server.netmap import build
from pcloud.server.netmap.broadcast import Delta
from pcloud.server.policy.document import parse_policy
from pcloud.server.protocol import INFRA_OWNER, SERVER_TAG
from pcloud.server.state import State
from pcloud.server.store.sqlite import SqliteStore


def open_state(tmp_path: Path, **settings: Any) -> State:
    full = Settings(state_dir=tmp_path, listen=(Listen("127.0.0.1", 1),), **settings)
    return State(full, SqliteStore(tmp_path / "pcloud.db"))


async def add(state: State, hostname: str, user: str = "alice", **extra: Any) -> NodeRec:
    n = len(state.node_by_key) + 1
    args: dict[str, Any] = {
        "public_key": f"key-{hostname}-{n}",
        "hostname": hostname,
        "endpoints": ("192.0.2.1:51820",),
        "user": user,
        "role": "client",
        "tags": (),
        "ephemeral": False,
        "token_digest": f"token-{hostname}-{n}",
        "observed": None,
    }
    return await state.register(**(args | extra))


def peers(answer: bytes, key: str = "peers") -> set[str]:
    return {p["hostname"] for p in json.loads(answer)[key]}


async def test_registration_plans_addresses_and_names_and_writes_through(tmp_path: Path) -> None:
    state = open_state(tmp_path)
    a1, a2 = await add(state, "laptop"), await add(state, "laptop")
    b1 = await add(state, "bob-pc", user="bob")
    # .1 is the first server's; names stay unique; the default policy: a user's own devices.
    assert [n.address for n in (a1, a2, b1)] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert (a1.hostname, a2.hostname) == ("laptop", "laptop-2")
    assert peers(build.full_json(state, a1.id)) == {"laptop-2"}
    assert peers(build.full_json(state, b1.id)) == set()
    assert state.devices_of("alice") == 2
    state.close()
    again = open_state(tmp_path)  # everything came from the store
    assert {n.id: n.address for n in again.nodes.values()} == {
        1: "10.0.0.2",
        2: "10.0.0.3",
        3: "10.0.0.4",
    }
    assert again.next_node_id == 4 and again.addrs == {"10.0.0.2": 1, "10.0.0.3": 2, "10.0.0.4": 3}
    assert peers(build.full_json(again, a1.id)) == {"laptop-2"}
    again.close()


async def test_changes_reach_exactly_the_nodes_whose_view_changed(tmp_path: Path) -> None:
    state = open_state(tmp_path)
    a1, a2 = await add(state, "a1"), await add(state, "a2")
    b1 = await add(state, "b1", user="bob")
    since = state.version
    await state.update_node(a2.id, endpoints=["198.51.100.7:41641"], observed=None)
    assert state.bus.delta(a1.id, since) == Delta(changed={a2.id})
    assert state.bus.delta(b1.id, since).empty()  # bob never sees alice's devices
    answer = json.loads(build.delta_json(state, a1.id, state.bus.delta(a1.id, since)))
    assert answer["full"] is False and answer["peers_removed"] == []
    assert answer["peers_changed"][0]["endpoints"] == ["198.51.100.7:41641"]
    # A token renewal by the node itself changes nothing any netmap shows: nobody wakes.
    quiet = state.version
    await state.update_node(a2.id, by_self=True, proven=True)
    assert state.bus.delta(a1.id, quiet).empty() and state.bus.delta(a2.id, quiet).empty()
    # Removal: the peer hears it, and the address goes back to IPAM.
    gone = state.version
    await state.delete_node(a2.id)
    assert state.bus.delta(a1.id, gone) == Delta(removed={a2.id})
    assert json.loads(build.delta_json(state, a1.id, Delta(removed={a2.id})))["peers_removed"] == [
        a2.id
    ]
    assert (await add(state, "a3")).address == a2.address
    with pytest.raises(ApiError) as missing:
        await state.delete_node(a2.id)
    assert missing.value.status == 404
    state.close()


async def test_logging_in_again_keeps_the_node_and_other_owners_are_refused(
    tmp_path: Path,
) -> None:
    state = open_state(tmp_path)
    first = await add(state, "laptop", public_key="k1", token_digest="old")
    again = await add(state, "laptop", public_key="k1", token_digest="new")
    assert (again.id, again.address, again.hostname) == (first.id, first.address, "laptop")
    assert state.node_by_token == {"new": first.id}  # the old node token no longer works
    with pytest.raises(ApiError) as taken:
        await add(state, "laptop", public_key="k1", user="bob")
    assert (taken.value.status, taken.value.code) == (409, "public_key_taken")
    state.close()


async def test_exhaustion_keeps_the_server_reserve_and_leaks_no_address(tmp_path: Path) -> None:
    state = open_state(tmp_path, network="10.9.0.0/29", max_devices_per_user=10)
    made = [(await add(state, f"n{i}")).address for i in range(4)]
    assert made == [f"10.9.0.{i}" for i in range(2, 6)]
    with pytest.raises(ApiError) as full:
        await add(state, "one-too-many")
    assert (full.value.status, full.value.code) == (409, "network_exhausted")
    servers = [await add(state, f"s{i}", role="server", proven=True) for i in range(2)]
    assert [s.address for s in servers] == ["10.9.0.1", "10.9.0.6"]
    # Server-role nodes are owned by tag:server, never by the person registering them.
    assert {(s.user, s.tags) for s in servers} == {(INFRA_OWNER, (SERVER_TAG,))}
    state.close()


async def test_the_device_quota_counts_untagged_devices_only(tmp_path: Path) -> None:
    state = open_state(tmp_path, max_devices_per_user=1)
    await add(state, "one")
    await add(state, "tagged", tags=("tag:ci",))  # owned by its tag: not in the quota
    await add(state, "exempt", user="root", quota_exempt=True)  # an admin: no quota
    with pytest.raises(ApiError) as quota:
        await add(state, "two")
    assert (quota.value.status, quota.value.code) == (403, "device_quota")
    await state.delete_node(1)
    assert (await add(state, "two")).hostname == "two"  # room again
    state.close()


async def test_cluster_records_and_the_server_list(tmp_path: Path) -> None:
    state = open_state(tmp_path, hostname="rpi111", advertise_urls=("https://10.0.0.1:8443",))
    node = await add(state, "laptop")
    url = "https://10.0.0.1:6443"

    def withdraw(value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None or url not in value["server_urls"]:
            return None
        return {"token": value["token"], "server_urls": []}

    assert await state.edit_k3s(withdraw) is False  # nothing published: nothing to withdraw
    assert state.k3s is None
    assert await state.edit_k3s(lambda _v: {"token": "K10::x", "server_urls": [url]}) is True
    assert await state.edit_k3s(lambda v: v) is False  # unchanged: no commit
    since = state.version
    await state.publish_self()
    assert state.servers["rpi111"]["urls"] == ["https://10.0.0.1:8443"]
    assert state.bus.delta(node.id, since).self_changed  # every node hears of a new server
    assert await state.withdraw_server("rpi111") == ["https://10.0.0.1:8443"]
    assert await state.withdraw_server("rpi111") is None
    state.close()
    again = open_state(tmp_path, hostname="rpi111")
    assert again.k3s == {"token": "K10::x", "server_urls": [url]} and again.servers == {}
    again.close()


async def test_a_policy_swap_tells_exactly_the_nodes_whose_view_changed(tmp_path: Path) -> None:
    state = open_state(tmp_path)
    a1, a2 = await add(state, "a1"), await add(state, "a2")
    b1 = await add(state, "b1", user="bob")
    since = state.version
    # Everyone reaches everyone: bob and alice now see each other; nobody else is affected.
    everyone = parse_policy('{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}')
    assert await state.set_policy(everyone) == 3
    assert state.bus.delta(b1.id, since).changed == {a1.id, a2.id}
    assert state.bus.delta(a1.id, since).changed == {b1.id}
    assert peers(build.full_json(state, b1.id)) == {"a1", "a2"}
    # Back to the default: the same views go away again, and the store says so after a restart.
    back = state.version
    assert await state.set_policy(None) == 3
    assert state.bus.delta(b1.id, back).removed == {a1.id, a2.id}
    state.close()
    again = open_state(tmp_path)
    assert again.policy is None and peers(build.full_json(again, b1.id)) == set()
    again.close()


async def test_a_commit_that_ends_unacknowledged_reserves_nothing_and_ids_are_never_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HA run lost an acknowledged node: a server whose commit ended without an answer
    (cancelled) kept its address reserved and, missing the commit, handed its node id out again,
    overwriting the node. Now the reservation is given back and a node id is claimed, not put."""
    state = open_state(tmp_path)
    real = state.store.acommit

    async def cancelled(ops: Any, version: int) -> None:
        raise asyncio.CancelledError

    monkeypatch.setattr(state.store, "acommit", cancelled)
    with pytest.raises(asyncio.CancelledError):
        await add(state, "gone")
    monkeypatch.setattr(state.store, "acommit", real)
    first = await add(state, "laptop")
    assert first.address == "10.0.0.2"  # the cancelled plan's address came back
    # A working set that missed a commit (its node id counter behind the store's).
    state.next_node_id = first.id
    second = await add(state, "phone")
    assert second.id == first.id + 1 and second.address == "10.0.0.3"
    state.close()
    again = open_state(tmp_path)
    assert {n.id: n.hostname for n in again.nodes.values()} == {1: "laptop", 2: "phone"}
    again.close()
