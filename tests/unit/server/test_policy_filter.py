"""Per-node packet filters and server-to-server reach (pcloud.server.policy.filter, .servers)."""

from __future__ import annotations

from pcloud.server.policy.filter import FilterCache, collapse, compute, signature
from pcloud.server.policy.servers import cut_infrastructure, reach_losses, subtract
from tests.unit.server.test_policy_engine import NODES, acls, index, rule

OPS = {"group:ops": ["bob"]}
SERVER_TAG = {"tag:server": []}
PORTS_DOC = acls(
    {**rule(["group:ops"], ["tag:server:22,443"]), "proto": "tcp"},
    {**rule(["alice@"], ["tag:server:53"]), "proto": "udp"},
    {**rule(["*"], ["tag:server:*"]), "proto": "icmp"},
    groups=OPS,
    tagOwners=SERVER_TAG,
)


def by_why(rules: list) -> dict[str, list]:  # type: ignore[type-arg]
    out: dict[str, list] = {}  # type: ignore[type-arg]
    for r in rules:
        out.setdefault(r.why, []).append(r)
    return out


def test_filter_lists_sources_protocols_and_ports_of_each_rule() -> None:
    idx = index(PORTS_DOC, NODES)
    rules = by_why(compute(idx, 7))
    (ssh,) = rules["acls[0]"]
    assert ssh.src == ["10.0.0.3", "10.0.0.4", "10.0.0.6"]  # bob's untagged devices
    assert ssh.proto == [6] and ssh.ports == [(22, 22), (443, 443)]
    assert ssh.src_aliases == ["group:ops"]
    (dns,) = rules["acls[1]"]
    assert dns.src == ["10.0.0.1", "10.0.0.2"] and dns.proto == [17]  # alice's
    (ping,) = rules["acls[2]"]
    assert ping.src == ["*"] and ping.proto == [1]
    # The built-in rule: the other server, on K3s/etcd/coordination ports.
    builtin = [r for r in compute(idx, 7) if r.why.startswith("built-in")]
    assert {tuple(r.proto) for r in builtin} == {(6,), (17,), (1,)}
    assert all(r.src == ["10.0.0.6/31"] for r in builtin)  # 6 and itself (harmless)
    assert (6443, 6443) in next(r for r in builtin if r.proto == [6]).ports
    # A client nobody may reach has an empty filter.
    assert compute(idx, 5) == []


def test_default_policy_filter_is_every_port_from_any_visible_peer() -> None:
    idx = index(None, NODES, admins={"alice"})
    for nid in (3, 6, 7):
        (rule,) = compute(idx, nid)
        assert rule.src == ["*"] and rule.proto == [] and rule.ports == [(0, 65535)]
    assert signature(idx, 3) == signature(idx, 6)  # the same filter everywhere


def test_cache_follows_the_index_generation() -> None:
    idx = index(PORTS_DOC, NODES)
    cache = FilterCache()
    first = cache.rules(idx, 7)
    assert cache.rules(idx, 7) is first
    from pcloud.server.policy.engine import NodeFacts

    idx.upsert(NodeFacts(id=9, user="bob", role="client", tags=(), address="10.0.0.9"))
    again = cache.rules(idx, 7)
    assert again is not first
    assert "10.0.0.9" in next(r for r in again if r.why == "acls[0]").src


def test_signature_sees_a_port_only_change() -> None:
    a = index(PORTS_DOC, NODES)
    b = index(PORTS_DOC.replace("22,443", "22,444"), NODES)
    assert signature(a, 7) != signature(b, 7)
    assert signature(a, 5) == signature(b, 5)


def test_icmp_ignores_the_ports_of_a_rule() -> None:
    idx = index(acls(rule(["bob@"], ["carol@:22"])), NODES)
    assert idx.can_reach(3, 5, 22, "tcp") and not idx.can_reach(3, 5, 80, "tcp")
    assert idx.can_reach(3, 5, 1, "icmp")


def test_a_document_without_server_rules_loses_server_reach_but_not_infrastructure() -> None:
    before = index(None, NODES)
    after = index(PORTS_DOC, NODES)
    names = {6: "rpi112", 7: "rpi111"}
    losses = reach_losses(before, after, names)
    # 6 is bob's, so group:ops keeps 22 and 443 towards 7; the reverse keeps only built-ins.
    assert losses[0].startswith("rpi112 -> rpi111 loses tcp 1-21, 23-442, 444-2378")
    assert losses[1].startswith("rpi111 -> rpi112 loses tcp 1-2378, 2381-2478")
    warning = cut_infrastructure(after)
    assert warning is not None and "6443 (K3s API)" in warning and "8472" in warning
    keep = index(acls(rule(["role:server"], ["role:server:*"]), tagOwners=SERVER_TAG), NODES)
    assert reach_losses(before, keep, names) == []
    assert cut_infrastructure(keep) is None


def test_range_helpers() -> None:
    assert subtract([(0, 100)], [(10, 20), (50, 50)]) == [(0, 9), (21, 49), (51, 100)]
    assert collapse(["10.0.0.2", "10.0.0.3", "10.0.0.9", "bad"]) == ["10.0.0.2/31", "10.0.0.9"]
