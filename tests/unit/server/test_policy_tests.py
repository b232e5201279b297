"""Policy `tests` (run_tests) and peer-list diffs (view_changes)."""

from __future__ import annotations

import json
from pathlib import Path

from pcloud.server.policy.document import parse_policy
from pcloud.server.policy.engine import NodeFacts, PeerIndex, run_tests, view_changes

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "policies"


def node(
    nid: int, user: str, role: str = "client", tags: tuple[str, ...] = (), addr: str = ""
) -> NodeFacts:
    return NodeFacts(id=nid, user=user, role=role, tags=tags, address=addr or f"10.0.0.{nid}")


NODES = [
    node(1, "alice"),
    node(2, "bob"),
    node(3, "carol"),
    node(4, "dave"),
    node(10, "alice", role="server", tags=("tag:server",)),
    node(11, "bob", role="server", tags=("tag:server",)),
    node(12, "carol", tags=("tag:ci",)),
]


def loaded(policy_text: str | None = None, nodes: list[NodeFacts] = NODES) -> PeerIndex:
    idx = PeerIndex(parse_policy(policy_text) if policy_text else None, set())
    idx.set_nodes(nodes)
    return idx


def test_headscale_example_tests_pass_on_a_matching_network() -> None:
    policy = parse_policy((FIXTURES / "headscale_example.hujson").read_text())
    outcomes = run_tests(policy, loaded())  # index under the default policy: tests use `policy`
    assert [o.src for o in outcomes] == ["alice@", "carol@", "tag:server"]
    assert all(o.passed for o in outcomes), [o.errors for o in outcomes]


def test_failing_accept_and_deny_are_reported_with_index_and_entry() -> None:
    text = json.dumps(
        {
            "tagOwners": {"tag:server": []},
            "acls": [{"action": "accept", "src": ["carol@"], "dst": ["tag:server:22,443"]}],
            "tests": [
                {"src": "carol@", "accept": ["tag:server:443"]},
                {"src": "carol@", "accept": ["tag:server:443", "tag:server:80"]},
                {"src": "carol@", "deny": ["tag:server:8080", "tag:server:22"]},
            ],
        }
    )
    first, second, third = run_tests(parse_policy(text), loaded())
    assert first.passed and first.errors == []
    assert not second.passed and len(second.errors) == 1
    assert second.errors[0].startswith("tests[1].accept[1]: carol@ cannot reach tag:server:80")
    assert "node 3 -> node 10" in second.errors[0]
    assert not third.passed and len(third.errors) == 1
    assert third.errors[0].startswith("tests[2].deny[1]: carol@ can reach tag:server:22")


def test_source_without_devices_fails() -> None:
    text = json.dumps({"tests": [{"src": "erin@", "accept": ["*:22"]}]})
    (outcome,) = run_tests(parse_policy(text), loaded())
    assert not outcome.passed
    assert outcome.errors == ["tests[0]: source 'erin@' has no devices"]


def test_proto_in_tests_is_honoured() -> None:
    text = json.dumps(
        {
            "acls": [{"action": "accept", "src": ["alice@"], "proto": "udp", "dst": ["bob@:53"]}],
            "tests": [
                {"src": "alice@", "proto": "udp", "accept": ["bob@:53"]},
                {"src": "alice@", "proto": "tcp", "deny": ["bob@:53"]},
                {"src": "alice@", "proto": "tcp", "accept": ["bob@:53"]},
            ],
        }
    )
    outcomes = run_tests(parse_policy(text), loaded())
    assert [o.passed for o in outcomes] == [True, True, False]


def test_host_target_without_a_node_is_judged_by_address() -> None:
    text = json.dumps(
        {
            "hosts": {"nas": "10.0.0.200", "lab": "10.0.8.0/24"},
            "acls": [{"action": "accept", "src": ["alice@"], "dst": ["nas:443", "10.0.0.0/16:22"]}],
            "tests": [
                {"src": "alice@", "accept": ["nas:443", "lab:22"], "deny": ["nas:80"]},
                {"src": "bob@", "accept": ["nas:443"]},
            ],
        }
    )
    ok, bad = run_tests(parse_policy(text), loaded())
    assert ok.passed, ok.errors
    assert not bad.passed and "tests[1].accept[0]" in bad.errors[0]


def test_autogroup_self_target_in_tests() -> None:
    nodes = [*NODES, node(5, "alice")]
    text = json.dumps(
        {
            "acls": [
                {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:22"]}
            ],
            "tests": [
                {"src": "alice@", "accept": ["autogroup:self:22"], "deny": ["bob@:22"]},
                {"src": "alice@", "accept": ["autogroup:self:23"]},
            ],
        }
    )
    ok, bad = run_tests(parse_policy(text), loaded(nodes=nodes))
    assert ok.passed, ok.errors
    assert not bad.passed


def test_run_tests_does_not_modify_the_index() -> None:
    idx = loaded()
    policy = parse_policy('{"acls": [], "tests": [{"src": "alice@", "deny": ["bob@:22"]}]}')
    assert run_tests(policy, idx)[0].passed
    assert idx.policy is None


def test_view_changes_reports_gains_and_losses_per_node() -> None:
    before = loaded()
    after = before.copy()
    after.set_policy(
        parse_policy(
            json.dumps(
                {
                    "tagOwners": {"tag:server": [], "tag:ci": []},
                    "acls": [{"action": "accept", "src": ["alice@"], "dst": ["tag:ci:*"]}],
                }
            )
        )
    )
    changes = view_changes(before, after, [n.id for n in NODES])
    # Default: every client sees both servers; servers see everyone.
    assert changes[1] == ({12}, {10, 11})
    assert changes[2] == (set(), {10, 11})
    assert changes[12] == ({1}, {10, 11})
    assert changes[10] == (set(), {1, 2, 3, 4, 12})  # 11: still a server (built-in rule)
    assert set(changes) == {1, 2, 3, 4, 10, 11, 12}


def test_view_changes_omits_unchanged_nodes_and_handles_new_nodes() -> None:
    before = loaded()
    after = before.copy()
    after.upsert(node(6, "dave"))
    changes = view_changes(before, after, [1, 4, 6, 10])
    assert 1 not in changes
    assert changes[4] == ({6}, set())
    assert changes[6] == ({4, 10, 11}, set())
    assert changes[10] == ({6}, set())
