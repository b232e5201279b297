"""peers_of must not scan every node: its cost follows the answer, not the network size.

The complexity is checked by counting how many node ids the index hands back while answering
(`NodeSet.members`/`same_user` results plus `contains` calls); wall time is only compared with a
plain 10k scan, with a wide margin, as a sanity check.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Set
from contextlib import contextmanager
from typing import Any

import pytest

from pcloud.server.policy.aliases import Alias
from pcloud.server.policy.document import parse_policy
from pcloud.server.policy.engine import NodeFacts, PeerIndex
from pcloud.server.policy.nodeset import NodeSet

USERS, DEVICES, SERVERS = 1000, 10, 3


def network() -> list[NodeFacts]:
    nodes = [
        NodeFacts(
            i, f"user{i // DEVICES}", "client", (), f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        )
        for i in range(USERS * DEVICES)
    ]
    base = USERS * DEVICES
    nodes += [
        NodeFacts(base + k, "user0", "server", ("tag:server",), f"10.200.0.{k + 1}")
        for k in range(SERVERS)
    ]
    return nodes


@contextmanager
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count node ids touched through the NodeSet while the block runs."""
    touched = [0]

    def wrap_set(name: str) -> None:
        original: Callable[..., Set[int]] = getattr(NodeSet, name)

        def counted(self: NodeSet, *args: Any) -> Set[int]:
            result = original(self, *args)
            touched[0] += len(result)
            return result

        monkeypatch.setattr(NodeSet, name, counted)

    original_contains = NodeSet.contains

    def contains(self: NodeSet, alias: Alias, node: NodeFacts) -> bool:
        touched[0] += 1
        return bool(original_contains(self, alias, node))

    wrap_set("members")
    wrap_set("same_user")
    monkeypatch.setattr(NodeSet, "contains", contains)
    yield touched
    monkeypatch.undo()


def best_time(fn: Callable[[], object], runs: int = 20) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@pytest.fixture(scope="module")
def default_index() -> PeerIndex:
    idx = PeerIndex(None, {"user7"})
    idx.set_nodes(network())
    return idx


def test_default_policy_client_peers_do_not_scan(
    default_index: PeerIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = 5 * DEVICES + 3  # user5's 4th device
    with counting(monkeypatch) as touched:
        peers = default_index.peers_of(client)
    servers = set(range(USERS * DEVICES, USERS * DEVICES + SERVERS))
    own = set(range(5 * DEVICES, 6 * DEVICES)) - {client}
    admin = set(range(7 * DEVICES, 8 * DEVICES))
    assert peers == own | servers | admin
    # Work is a few times the answer (23 peers), far from the 10,003 nodes.
    assert touched[0] < 100, touched[0]


def test_document_policy_client_peers_do_not_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    text = """{
      "groups": {"group:ops": ["user1@", "user2@"]},
      "tagOwners": {"tag:server": ["group:ops"]},
      "acls": [
        {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
        {"action": "accept", "src": ["group:ops"], "dst": ["tag:server:*"]},
        {"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server:443"]},
        {"action": "accept", "src": ["tag:server"], "dst": ["tag:server:6443"]},
      ],
    }"""
    idx = PeerIndex(parse_policy(text), set())
    idx.set_nodes(network())
    with counting(monkeypatch) as touched:
        peers = idx.peers_of(42)
    assert peers == (set(range(40, 50)) - {42}) | set(range(10000, 10003))
    assert touched[0] < 100, touched[0]


def test_server_peers_are_everyone(default_index: PeerIndex) -> None:
    assert len(default_index.peers_of(USERS * DEVICES)) == USERS * DEVICES + SERVERS - 1


def test_client_peers_of_is_much_faster_than_one_scan(default_index: PeerIndex) -> None:
    client = 123
    ns = NodeSet()
    nodes = network()
    for n in nodes:
        ns.add(n)
    member = Alias("member", "autogroup:member")

    def scan() -> object:
        return [n.id for n in nodes if ns.contains(member, n)]

    peers_time = best_time(lambda: default_index.peers_of(client))
    scan_time = best_time(scan, runs=5)
    print(
        f"\npeers_of(client) at 10k nodes: {peers_time * 1e6:.1f} us; one 10k scan: "
        f"{scan_time * 1e6:.0f} us"
    )
    assert peers_time * 5 < scan_time


def test_upsert_keeps_peers_of_cheap_after_changes(
    default_index: PeerIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx = default_index.copy()
    idx.upsert(NodeFacts(999_999, "user5", "client", (), "10.250.0.1"))
    idx.remove(50)
    with counting(monkeypatch) as touched:
        peers = idx.peers_of(51)
    assert 999_999 in peers and 50 not in peers
    assert touched[0] < 100
    assert 999_999 not in default_index.peers_of(51)
