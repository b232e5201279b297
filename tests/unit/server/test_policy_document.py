"""Parsing and validation of policy documents (pcloud.server.policy.document)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from pcloud.server.policy.document import PolicyError, parse_policy

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "policies"


def errors_of(text: str, users: set[str] | None = None) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, users=users)
    errors: list[str] = info.value.errors
    assert errors, "a PolicyError must carry at least one message"
    return errors


def acl(*rules: dict[str, object], **sections: object) -> str:
    return json.dumps({"acls": list(rules), **sections})


# --- HuJSON ------------------------------------------------------------------------------------


def test_hujson_comments_and_trailing_commas() -> None:
    text = """
    // line comment
    {
      /* block comment */
      "groups": {"group:a": ["alice@",],},
      "acls": [
        {"action": "accept", "src": ["group:a"], "dst": ["*:22",],}, // trailing
      ],
    }
    """
    policy = parse_policy(text)
    assert policy.text == text
    assert policy.groups == {"group:a": frozenset({"alice"})}
    assert len(policy.rules) == 1
    assert policy.rules[0].dst[0].ports == ((22, 22),)


def test_invalid_hujson_is_an_error() -> None:
    assert "not valid HuJSON" in errors_of('{"acls": [')[0]


@pytest.mark.parametrize("text", ["", "   ", "[]", '"x"'])
def test_empty_or_non_object_document_is_refused(text: str) -> None:
    errors_of(text)


def test_headscale_example_loads_unchanged() -> None:
    text = (FIXTURES / "headscale_example.hujson").read_text()
    policy = parse_policy(text)
    assert policy.text == text
    assert policy.groups["group:dev"] == frozenset({"carol", "dave"})
    assert policy.hosts["nas"] == ipaddress.ip_network("10.0.0.20/32")
    assert policy.hosts["lab"] == ipaddress.ip_network("10.0.8.0/24")
    assert set(policy.tag_owners) == {"tag:server", "tag:ci"}
    assert len(policy.rules) == 7
    assert [r.where for r in policy.rules] == [f"acls[{i}]" for i in range(7)]
    assert policy.rules[0].dst[0].alias.kind == "self"
    assert policy.rules[1].dst[0].ports == ((22, 22), (443, 443))
    assert policy.rules[3].dst[0].ports == ((8000, 8099),)
    assert policy.rules[4].proto == 6 and policy.rules[5].proto == 17
    assert policy.rules[6].dst[0].alias.network == ipaddress.ip_network("fd7a:115c:a1e0::42/128")
    assert policy.rules[6].dst[0].ports == ((80, 80),)
    assert len(policy.tests) == 3
    assert policy.tests[1].deny[0].port == 22
    assert policy.warnings == ["section 'ssh' is not supported by PCloud and has no effect"]
    assert not policy.allow_all


# --- sections ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "section", ["grants", "ssh", "nodeAttrs", "autoApprovers", "sshTests", "randomizeClientPort"]
)
def test_headscale_sections_outside_subset_are_warnings(section: str) -> None:
    policy = parse_policy(json.dumps({section: [], "acls": []}))
    assert len(policy.warnings) == 1
    assert repr(section) in policy.warnings[0]


def test_unknown_section_is_an_error_naming_it() -> None:
    errors = errors_of(json.dumps({"acls": [], "postures": {}, "derpMap": {}}))
    assert len(errors) == 2
    assert "unknown section 'postures'" in errors[0]
    assert "unknown section 'derpMap'" in errors[1]


def test_no_acls_key_allows_all_and_empty_acls_deny_all() -> None:
    assert parse_policy("{}").allow_all
    assert len(parse_policy("{}").rules) == 1
    empty = parse_policy('{"acls": []}')
    assert not empty.allow_all and empty.rules == ()


# --- aliases -----------------------------------------------------------------------------------


def test_alias_resolution_kinds() -> None:
    text = acl(
        {
            "action": "accept",
            "src": [
                "10.0.0.1",
                "10.1.0.0/16",
                "*",
                "alice@",
                "bob",
                "group:g",
                "tag:t",
                "autogroup:member",
                "autogroup:tagged",
                "role:server",
                "role:client",
                "nas",
            ],
            "dst": ["autogroup:self:*"],
        },
        groups={"group:g": ["x@"]},
        tagOwners={"tag:t": ["x@"]},
        hosts={"nas": "10.0.0.9"},
    )
    kinds = [a.kind for a in parse_policy(text).rules[0].src]
    assert kinds == [
        "prefix",
        "prefix",
        "all",
        "user",
        "user",
        "group",
        "tag",
        "member",
        "tagged",
        "role",
        "role",
        "prefix",
    ]
    src = parse_policy(text).rules[0].src
    assert src[3].name == "alice" and src[4].name == "bob"
    assert src[11].network == ipaddress.ip_network("10.0.0.9/32")


def test_hosts_name_wins_over_plain_user_name() -> None:
    text = acl({"action": "accept", "src": ["nas"], "dst": ["*:*"]}, hosts={"nas": "10.0.0.9"})
    assert parse_policy(text, users={"nas"}).rules[0].src[0].kind == "prefix"


def test_unknown_user_with_at_matches_nothing_but_is_not_an_error() -> None:
    text = acl({"action": "accept", "src": ["ghost@"], "dst": ["*:*"]})
    alias = parse_policy(text, users={"alice"}).rules[0].src[0]
    assert (alias.kind, alias.name) == ("user", "ghost")


def test_unknown_plain_name_is_an_error_when_users_are_known() -> None:
    text = acl({"action": "accept", "src": ["alice", "ghost"], "dst": ["*:*"]})
    (error,) = errors_of(text, users={"alice"})
    assert error.startswith("acls[0].src[1]:") and "'ghost'" in error


def test_unknown_group_is_an_error() -> None:
    text = acl(
        {"action": "accept", "src": ["*"], "dst": ["*:*"]},
        {"action": "accept", "src": ["group:nope"], "dst": ["*:*"]},
    )
    (error,) = errors_of(text)
    assert error.startswith("acls[1].src[0]:") and "unknown group 'group:nope'" in error


def test_unknown_autogroup_is_an_error() -> None:
    (error,) = errors_of(acl({"action": "accept", "src": ["*"], "dst": ["autogroup:internet:*"]}))
    assert error.startswith("acls[0].dst[0]:") and "'autogroup:internet'" in error


def test_unknown_role_is_an_error() -> None:
    (error,) = errors_of(acl({"action": "accept", "src": ["role:db"], "dst": ["*:*"]}))
    assert error.startswith("acls[0].src[0]:") and "'role:db'" in error


def test_autogroup_self_as_source_is_an_error() -> None:
    text = acl(
        {"action": "accept", "src": ["*"], "dst": ["*:*"]},
        {"action": "accept", "src": ["*"], "dst": ["*:*"]},
        {"action": "accept", "src": ["autogroup:member", "autogroup:self"], "dst": ["*:*"]},
    )
    (error,) = errors_of(text)
    assert error.startswith("acls[2].src[1]:") and "'autogroup:self'" in error


def test_tag_without_tag_owner_is_an_error_in_rules_and_tests() -> None:
    text = acl(
        {"action": "accept", "src": ["tag:web"], "dst": ["tag:db:5432"]},
        tagOwners={"tag:web": ["alice@"]},
        tests=[{"src": "alice@", "accept": ["tag:cache:6379"]}],
    )
    errors = errors_of(text)
    assert len(errors) == 2
    assert errors[0].startswith("acls[0].dst[0]:") and "'tag:db'" in errors[0]
    assert errors[1].startswith("tests[0].accept[0]:") and "'tag:cache'" in errors[1]


def test_action_other_than_accept_is_an_error() -> None:
    (error,) = errors_of(acl({"action": "drop", "src": ["*"], "dst": ["*:*"]}))
    assert error.startswith("acls[0]:") and "'drop'" in error


def test_unknown_rule_field_is_an_error() -> None:
    (error,) = errors_of(acl({"action": "accept", "src": ["*"], "dst": ["*:*"], "users": []}))
    assert error.startswith("acls[0]:") and "'users'" in error


# --- destinations and ports --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dst", "ports"),
    [
        ("*:*", ((0, 65535),)),
        ("alice@:22", ((22, 22),)),
        ("tag:t:80,443", ((80, 80), (443, 443))),
        ("10.0.0.0/24:8000-8099", ((8000, 8099),)),
        ("[fd7a::1]:80", ((80, 80),)),
        ("autogroup:self:22,8000-8001", ((22, 22), (8000, 8001))),
    ],
)
def test_destination_ports(dst: str, ports: tuple[tuple[int, int], ...]) -> None:
    text = acl({"action": "accept", "src": ["*"], "dst": [dst]}, tagOwners={"tag:t": []})
    assert parse_policy(text).rules[0].dst[0].ports == ports


def test_ipv6_destination_splits_at_last_colon() -> None:
    entry = parse_policy(acl({"action": "accept", "src": ["*"], "dst": ["[fd7a::1]:80"]}))
    alias = entry.rules[0].dst[0].alias
    assert alias.network == ipaddress.ip_network("fd7a::1/128")


@pytest.mark.parametrize(
    ("dst", "needle"),
    [
        ("*:0", "port 0"),
        ("tag:t:0-10", "port 0"),
        ("*:70000", "out of range"),
        ("*:90-80", "reversed"),
        ("*:http", "no port"),
    ],
)
def test_bad_ports_are_errors(dst: str, needle: str) -> None:
    text = acl({"action": "accept", "src": ["*"], "dst": [dst]}, tagOwners={"tag:t": []})
    (error,) = errors_of(text)
    assert error.startswith("acls[0].dst[0]:") and needle in error


@pytest.mark.parametrize("dst", ["tag:t", "alice@", "10.0.0.1", "autogroup:self", "*"])
def test_destination_without_port_is_an_error(dst: str) -> None:
    text = acl({"action": "accept", "src": ["*"], "dst": ["*:*", dst]}, tagOwners={"tag:t": []})
    (error,) = errors_of(text)
    assert error.startswith("acls[0].dst[1]:") and "no port" in error and repr(dst) in error


def test_proto_is_normalised_and_checked() -> None:
    ok = parse_policy(acl({"action": "accept", "src": ["*"], "proto": "UDP", "dst": ["*:53"]}))
    assert ok.rules[0].proto == 17
    (error,) = errors_of(acl({"action": "accept", "src": ["*"], "proto": "tpc", "dst": ["*:1"]}))
    assert error.startswith("acls[0].proto:") and "'tpc'" in error


def test_every_error_is_reported_at_once() -> None:
    text = acl(
        {"action": "accept", "src": ["group:x"], "dst": ["*:0"]},
        {"action": "deny", "src": ["*"], "dst": ["*:*"]},
        bogus=1,
    )
    errors = errors_of(text)
    assert len(errors) == 4
    joined = "\n".join(errors)
    for needle in ("'bogus'", "acls[0].src[0]", "acls[0].dst[0]", "acls[1]:"):
        assert needle in joined


# --- groups, hosts, tagOwners, tests -----------------------------------------------------------


def test_group_members_must_be_users() -> None:
    text = acl(groups={"group:a": ["alice@", "group:b"], "group:b": []})
    (error,) = errors_of(text)
    assert error.startswith("groups['group:a'][1]:") and "'group:b'" in error


def test_group_with_unknown_plain_user_is_an_error_when_users_known() -> None:
    text = acl(groups={"group:a": ["alice", "ghost", "ghost2@"]})
    (error,) = errors_of(text, users={"alice"})
    assert "groups['group:a'][1]" in error and "'ghost'" in error
    assert parse_policy(text).groups["group:a"] == {"alice", "ghost", "ghost2"}


def test_bad_host_address_is_an_error() -> None:
    (error,) = errors_of(acl(hosts={"nas": "not-an-ip"}))
    assert "hosts['nas']" in error and "'not-an-ip'" in error


def test_tag_owner_referring_to_unknown_group_is_an_error() -> None:
    (error,) = errors_of(acl(tagOwners={"tag:a": ["group:missing"]}))
    assert "tagOwners['tag:a'][0]" in error and "'group:missing'" in error


def test_tests_are_parsed() -> None:
    text = acl(
        {"action": "accept", "src": ["*"], "dst": ["*:*"]},
        tests=[{"src": "alice@", "proto": "tcp", "accept": ["bob@:22"], "deny": ["*:23"]}],
    )
    (test,) = parse_policy(text).tests
    assert test.src.name == "alice" and test.proto == 6 and test.where == "tests[0]"
    assert [(t.text, t.port) for t in test.accept] == [("bob@:22", 22)]
    assert [(t.text, t.port) for t in test.deny] == [("*:23", 23)]


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"src": "alice@", "accept": ["bob@:*"]}, "tests[0].accept[0]"),
        ({"src": "alice@", "deny": ["bob@:22,23"]}, "tests[0].deny[0]"),
        ({"src": "alice@", "accept": ["bob@"]}, "no port"),
        ({"src": "autogroup:self", "accept": ["bob@:22"]}, "tests[0].src"),
        ({"src": "group:nope", "accept": ["bob@:22"]}, "unknown group"),
        ({"src": ["alice@"], "accept": ["bob@:22"]}, "tests[0].src"),
    ],
)
def test_bad_tests_are_errors(entry: dict[str, object], needle: str) -> None:
    (error,) = errors_of(acl(tests=[entry]))
    assert needle in error
