"""Reachability and peer visibility (pcloud.server.policy.engine.PeerIndex)."""

from __future__ import annotations

import json

import pytest

from pcloud.server.policy.document import parse_policy
from pcloud.server.policy.engine import NodeFacts, PeerIndex


def node(
    nid: int, user: str, role: str = "client", tags: tuple[str, ...] = (), addr: str = ""
) -> NodeFacts:
    return NodeFacts(id=nid, user=user, role=role, tags=tags, address=addr or f"10.0.0.{nid}")


def index(
    policy_text: str | None, nodes: list[NodeFacts], admins: set[str] | None = None
) -> PeerIndex:
    policy = parse_policy(policy_text) if policy_text is not None else None
    idx = PeerIndex(policy, admins or set())
    idx.set_nodes(nodes)
    return idx


def acls(*rules: dict[str, object], **sections: object) -> str:
    return json.dumps({"acls": list(rules), **sections})


def rule(src: list[str], dst: list[str], proto: str | None = None) -> dict[str, object]:
    r: dict[str, object] = {"action": "accept", "src": src, "dst": dst}
    if proto:
        r["proto"] = proto
    return r


# A small network: alice (admin) has 1, 2; bob has 3, 4; carol has 5; 6 and 7 are servers
# (6 untagged, owned by bob; 7 tagged tag:server, registered by alice); 8 is tagged tag:ci.
NODES = [
    node(1, "alice"),
    node(2, "alice"),
    node(3, "bob"),
    node(4, "bob"),
    node(5, "carol"),
    node(6, "bob", role="server"),
    node(7, "alice", role="server", tags=("tag:server",)),
    node(8, "carol", tags=("tag:ci",)),
]


# --- default policy ----------------------------------------------------------------------------


def test_default_policy_users_see_own_devices_and_servers_only() -> None:
    idx = index(None, NODES, admins={"alice"})
    assert idx.peers_of(3) == {4, 6, 7, 1, 2}  # own device, servers, and the admin's devices
    assert idx.peers_of(5) == {6, 7, 1, 2}
    assert 5 not in idx.peers_of(3) and 3 not in idx.peers_of(5)
    assert not idx.can_reach(3, 5) and not idx.can_reach(5, 3)


def test_default_policy_servers_are_reachable_by_all_and_see_all() -> None:
    idx = index(None, NODES, admins={"alice"})
    for n in (1, 2, 3, 4, 5, 8):
        assert idx.can_reach(n, 6, port=22) and idx.can_reach(n, 7, port=6443)
    assert idx.peers_of(6) == {1, 2, 3, 4, 5, 7, 8}
    assert not idx.can_reach(6, 5)  # visibility is two-way, reachability is not


def test_default_policy_admin_sees_and_reaches_everything() -> None:
    idx = index(None, NODES, admins={"alice"})
    assert idx.peers_of(1) == {2, 3, 4, 5, 6, 7, 8}
    assert all(idx.can_reach(1, n, port=22) for n in (3, 4, 5, 8))
    # The admin's tagged server is owned by its tag, not by alice.
    assert not idx.can_reach(7, 5)


def test_set_admins_changes_default_visibility() -> None:
    idx = index(None, NODES, admins=set())
    assert 5 not in idx.peers_of(1)
    idx.set_admins({"alice"})
    assert 5 in idx.peers_of(1) and 1 in idx.peers_of(5)
    assert idx.can_reach(1, 5) and not idx.can_reach(5, 1)
    idx.set_admins({"carol"})
    assert idx.can_reach(5, 1) and not idx.can_reach(1, 5)
    assert 3 in idx.peers_of(5) and 5 in idx.peers_of(3)


def test_document_drops_default_admin_and_server_rules() -> None:
    idx = index(acls(rule(["autogroup:member"], ["autogroup:self:*"])), NODES, admins={"alice"})
    assert idx.peers_of(1) == {2}
    # bob's untagged server is just one of bob's devices now, plus the other server: the
    # built-in rule keeps servers reaching each other on K3s/etcd/coordination ports only.
    assert idx.peers_of(6) == {3, 4, 7}
    assert idx.peers_of(7) == {6}
    assert idx.can_reach(7, 6, 6443, "tcp") and not idx.can_reach(7, 6, 22, "tcp")
    assert not idx.can_reach(5, 6) and not idx.can_reach(1, 6)


# --- allow all / deny all ----------------------------------------------------------------------


def test_no_acls_allows_all() -> None:
    idx = index("{}", NODES)
    assert idx.peers_of(5) == {1, 2, 3, 4, 6, 7, 8}
    assert idx.can_reach(8, 3, port=12345, proto="udp")


def test_empty_acls_denies_all() -> None:
    idx = index('{"acls": []}', NODES, admins={"alice"})
    # Nothing but the built-in rule: the two servers still see each other.
    assert all(idx.peers_of(n.id) == set() for n in NODES if n.id not in (6, 7))
    assert idx.peers_of(6) == {7} and idx.peers_of(7) == {6}
    assert not idx.can_reach(1, 6)


# --- ownership ---------------------------------------------------------------------------------


def test_tagged_node_is_not_matched_by_user_group_or_member() -> None:
    text = acls(
        rule(["alice@"], ["carol@:1"]),
        rule(["group:a"], ["carol@:2"]),
        rule(["autogroup:member"], ["carol@:3"]),
        rule(["alice"], ["carol@:4"]),
        groups={"group:a": ["alice@"]},
    )
    idx = index(text, NODES)
    for port in (1, 2, 3, 4):
        assert idx.can_reach(1, 5, port=port)  # alice's laptop
        assert not idx.can_reach(7, 5, port=port)  # alice's tagged server
    # Nor is a tagged node a destination for carol@ (node 8 is carol's tagged CI box).
    assert 8 not in idx.peers_of(1)


def test_autogroup_tagged_and_tag_match_tagged_nodes() -> None:
    text = acls(
        rule(["autogroup:tagged"], ["carol@:22"]),
        rule(["carol@"], ["tag:ci:8080"]),
        tagOwners={"tag:ci": ["carol@"]},
    )
    idx = index(text, NODES)
    assert idx.can_reach(7, 5) and idx.can_reach(8, 5) and not idx.can_reach(1, 5)
    assert idx.can_reach(5, 8, port=8080) and not idx.can_reach(5, 8, port=22)
    assert idx.peers_of(8) == {5}


def test_autogroup_self_excludes_tagged_nodes_and_other_users() -> None:
    idx = index(acls(rule(["autogroup:member"], ["autogroup:self:*"])), NODES)
    assert idx.peers_of(1) == {2}  # not the tagged server 7 registered by alice
    assert idx.peers_of(3) == {4, 6}  # bob's untagged server is bob's too
    assert idx.peers_of(7) == {6}  # only the other server, through the built-in rule
    assert idx.can_reach(3, 4) and not idx.can_reach(3, 1)


def test_autogroup_self_dst_with_narrow_source() -> None:
    text = acls(rule(["role:server"], ["autogroup:self:22"]))
    idx = index(text, NODES)
    assert idx.can_reach(6, 3, port=22) and not idx.can_reach(6, 3, port=23)
    assert not idx.can_reach(3, 6)
    assert idx.peers_of(3) == {6} and idx.peers_of(4) == {6}
    assert idx.peers_of(6) == {3, 4, 7}  # 7: the built-in server rule
    assert idx.peers_of(7) == {6}  # tagged: no "self"; 6 by the built-in server rule


def test_role_server_matches_tagged_and_untagged_servers() -> None:
    idx = index(acls(rule(["carol@"], ["role:server:443"])), NODES)
    assert idx.can_reach(5, 6, port=443) and idx.can_reach(5, 7, port=443)
    assert idx.peers_of(5) == {6, 7}
    idx2 = index(
        acls(rule(["role:client"], ["tag:server:22"]), tagOwners={"tag:server": []}), NODES
    )
    assert idx2.peers_of(7) == {1, 2, 3, 4, 5, 6, 8}  # 6: the built-in server rule


def test_ip_cidr_and_hosts_aliases_match_by_address() -> None:
    text = acls(
        rule(["10.0.0.1"], ["lab:*"]),
        rule(["10.0.0.4/31"], ["nas:80"]),
        hosts={"lab": "10.0.0.6/31", "nas": "10.0.0.3"},
    )
    idx = index(text, NODES)
    assert idx.peers_of(1) == {6, 7}
    assert idx.can_reach(4, 3, port=80) and idx.can_reach(5, 3, port=80)
    assert not idx.can_reach(3, 4)
    assert idx.peers_of(3) == {4, 5}


def test_ipv6_addresses() -> None:
    nodes = [
        node(1, "a", addr="fd7a::1"),
        node(2, "b", addr="fd7a::2"),
        node(3, "c", addr="fd7a::3"),
    ]
    idx = index(acls(rule(["fd7a::1"], ["[fd7a::2]:80", "fd7a::/127:22"])), nodes)
    assert idx.peers_of(1) == {2}
    assert idx.can_reach(1, 2, port=80) and not idx.can_reach(1, 3, port=80)


# --- visibility direction, ports, protocols ----------------------------------------------------


def test_one_way_rule_gives_two_way_visibility() -> None:
    idx = index(acls(rule(["carol@"], ["bob@:22"])), NODES)
    assert idx.can_reach(5, 3) and not idx.can_reach(3, 5)
    assert idx.peers_of(5) == {3, 4, 6}  # 6 is bob's untagged server
    assert idx.peers_of(3) == {5} and idx.peers_of(4) == {5}
    assert idx.peers_of(1) == set() and idx.peers_of(7) == {6}  # built-in server rule


def test_port_and_proto_specific_can_reach() -> None:
    text = acls(
        rule(["bob@"], ["carol@:22,8000-8099"], proto="tcp"),
        rule(["bob@"], ["carol@:53"], proto="udp"),
        rule(["bob@"], ["alice@:443"]),
    )
    idx = index(text, NODES)
    assert idx.can_reach(3, 5, port=22, proto="tcp")
    assert idx.can_reach(3, 5, port=8050) and not idx.can_reach(3, 5, port=8100)
    assert not idx.can_reach(3, 5, port=22, proto="udp")
    assert idx.can_reach(3, 5, port=53, proto="udp") and not idx.can_reach(
        3, 5, port=53, proto="tcp"
    )
    assert idx.can_reach(3, 1, port=443, proto="udp")  # no proto: TCP, UDP and ICMP
    assert not idx.can_reach(3, 1, port=443, proto="gre")
    assert not idx.can_reach(3, 1, port=80)
    assert idx.can_reach(3, 1)  # any port


def test_can_reach_unknown_nodes_and_self() -> None:
    idx = index('{"acls": []}', NODES)
    assert idx.can_reach(1, 1)
    assert not idx.can_reach(1, 99) and not idx.can_reach(99, 1)
    assert idx.peers_of(99) == set()
    with pytest.raises(ValueError):
        idx.can_reach(1, 2, proto="nonsense")


# --- index maintenance -------------------------------------------------------------------------


def test_upsert_changing_user_moves_the_node_between_users() -> None:
    idx = index(None, NODES)
    assert idx.peers_of(5) == {6, 7}
    idx.upsert(node(4, "carol"))
    assert idx.peers_of(5) == {4, 6, 7}
    assert idx.peers_of(3) == {6, 7}
    assert 4 not in idx.peers_of(3)


def test_upsert_changing_tags_and_role_updates_indexes() -> None:
    text = acls(rule(["alice@"], ["tag:web:443", "role:server:22"]), tagOwners={"tag:web": []})
    idx = index(text, NODES)
    assert idx.peers_of(1) == {6, 7}
    idx.upsert(node(5, "carol", tags=("tag:web",)))
    assert idx.peers_of(1) == {5, 6, 7}
    idx.upsert(node(6, "bob", role="client"))
    assert idx.peers_of(1) == {5, 7}
    idx.upsert(node(5, "carol"))
    assert idx.peers_of(1) == {7}
    # Tagging alice's laptop makes it lose alice's rights (owned by the tag now).
    idx.upsert(node(1, "alice", tags=("tag:web",)))
    assert idx.peers_of(1) == {2}  # alice's other laptop reaches it on tag:web:443


def test_upsert_changing_address_updates_cidr_membership() -> None:
    text = acls(rule(["alice@"], ["lab:*"]), hosts={"lab": "10.9.0.0/16"})
    idx = index(text, NODES)
    assert idx.peers_of(1) == set()
    idx.upsert(node(5, "carol", addr="10.9.1.1"))
    assert idx.peers_of(1) == {5}
    idx.remove(5)
    assert idx.peers_of(1) == set()
    idx.upsert(node(9, "dave", addr="10.9.2.2"))
    assert idx.peers_of(2) == {9}


def test_remove_node() -> None:
    idx = index(None, NODES)
    idx.remove(4)
    assert idx.peers_of(3) == {6, 7}
    assert 4 not in idx.peers_of(6)
    idx.remove(4)  # removing twice is harmless
    assert 4 not in idx


def test_set_policy_switches_rules() -> None:
    idx = index(None, NODES)
    assert idx.peers_of(5) == {6, 7}
    idx.set_policy(parse_policy("{}"))
    assert idx.peers_of(5) == {1, 2, 3, 4, 6, 7, 8}
    idx.set_policy(None)
    assert idx.peers_of(5) == {6, 7}


def test_copy_is_independent() -> None:
    idx = index(None, NODES)
    other = idx.copy()
    other.upsert(node(4, "carol"))
    other.set_policy(parse_policy('{"acls": []}'))
    assert idx.peers_of(5) == {6, 7}
    assert other.peers_of(5) == set()
    assert idx.policy is None and other.policy is not None
