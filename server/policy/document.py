"""Parse and validate a policy document (the Headscale/Tailscale HuJSON subset PCloud speaks).

`parse_policy` reads HuJSON (JSON with comments and trailing commas, via `json5`), checks every
section, and compiles the `acls` into `Rule`s and the `tests` into `PolicyTest`s. It collects
every problem it finds, each prefixed with its location ("acls[2].dst[0]: ..."), and raises one
`PolicyError` carrying them all, so an admin fixes a file in one round trip.

Alias resolution order follows Headscale: IP/CIDR, `*`, contains `@` (user), `group:`, `tag:`,
`autogroup:`, then PCloud's `role:`, a `hosts` name, and last a plain user name.

Nothing here touches nodes, storage or the network; evaluation lives in engine.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import json5

from .aliases import (
    Alias,
    AliasContext,
    DstEntry,
    IPNetwork,
    Rule,
    parse_alias,
    parse_dst,
    parse_network,
    parse_proto,
    parse_test_target,
    user_name,
)

SUPPORTED_SECTIONS = ("groups", "hosts", "tagOwners", "acls", "tests")
# Valid Headscale sections PCloud does not implement: accepted so a Headscale file loads, but the
# admin is told they have no effect.
IGNORED_SECTIONS = (
    "grants",
    "ssh",
    "nodeAttrs",
    "autoApprovers",
    "sshTests",
    "randomizeClientPort",
)
_RULE_KEYS = frozenset({"action", "src", "proto", "dst"})
_TEST_KEYS = frozenset({"src", "proto", "accept", "deny"})


class PolicyError(Exception):
    """The document is refused; `errors` lists every problem, each naming rule and alias."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class TestTarget:
    alias: Alias
    port: int
    text: str


@dataclass(frozen=True)
class PolicyTest:
    """One entry of `tests`: every `src` device must reach each `accept` target and no `deny`."""

    __test__ = False  # keep pytest from collecting this class when a test module imports it

    src: Alias
    proto: int | None
    accept: tuple[TestTarget, ...]
    deny: tuple[TestTarget, ...]
    where: str


# eq=False: a Policy is compared and hashed by identity, which is what caches keyed on "the
# current policy" want, and its mappings are not hashable anyway.
@dataclass(frozen=True, eq=False)
class Policy:
    text: str
    rules: tuple[Rule, ...]
    tests: tuple[PolicyTest, ...] = ()
    warnings: list[str] = field(default_factory=list)
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    hosts: Mapping[str, IPNetwork] = field(default_factory=dict)
    tag_owners: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # True when the document has no `acls` key: Headscale then allows everything.
    allow_all: bool = False

    @property
    def networks(self) -> frozenset[IPNetwork]:
        """Every IP/CIDR/hosts network the rules and tests use (the engine indexes these)."""
        nets = {a.network for r in self.rules for a in r.src if a.network is not None}
        nets |= {d.alias.network for r in self.rules for d in r.dst if d.alias.network is not None}
        for t in self.tests:
            for a in (t.src, *(x.alias for x in t.accept + t.deny)):
                if a.network is not None:
                    nets.add(a.network)
        return frozenset(nets)


ALL_ALIAS = Alias("all", "*")
ALLOW_ALL_RULE = Rule(
    src=(ALL_ALIAS,),
    dst=(DstEntry(ALL_ALIAS, ((0, 65535),), "*:*"),),
    proto=None,
    where="(no acls: allow all)",
)


def parse_policy(text: str, *, users: Iterable[str] | None = None) -> Policy:
    """Parse, validate and compile `text`; raise `PolicyError` listing every problem.

    `users`, when given, are the existing user names: a plain name (no `@`) that is neither a
    host nor one of them is then an error. Without it plain names are taken as users on trust.
    """
    if not isinstance(text, str) or not text.strip():
        raise PolicyError(["the policy document is empty"])
    try:
        doc = json5.loads(text)
    except ValueError as exc:
        raise PolicyError([f"not valid HuJSON: {exc}"]) from None
    if not isinstance(doc, dict):
        raise PolicyError(["the policy document must be an object ({...})"])

    errors: list[str] = []
    warnings: list[str] = []
    for key in doc:
        if key in IGNORED_SECTIONS:
            warnings.append(f"section {key!r} is not supported by PCloud and has no effect")
        elif key not in SUPPORTED_SECTIONS:
            errors.append(
                f"unknown section {key!r} (supported: {', '.join(SUPPORTED_SECTIONS)};"
                f" ignored: {', '.join(IGNORED_SECTIONS)})"
            )

    known_users = frozenset(users) if users is not None else None
    groups = _parse_groups(doc.get("groups", {}), known_users, errors)
    hosts = _parse_hosts(doc.get("hosts", {}), errors)
    tag_owners = _parse_tag_owners(doc.get("tagOwners", {}), groups, errors)
    ctx = AliasContext(groups=groups, hosts=hosts, tags=frozenset(tag_owners), users=known_users)

    allow_all = "acls" not in doc
    rules = (ALLOW_ALL_RULE,) if allow_all else _parse_acls(doc["acls"], ctx, errors)
    tests = _parse_tests(doc.get("tests", []), ctx, errors)
    if errors:
        raise PolicyError(errors)
    return Policy(
        text=text,
        rules=rules,
        tests=tests,
        warnings=warnings,
        groups=groups,
        hosts=hosts,
        tag_owners=tag_owners,
        allow_all=allow_all,
    )


def _mapping(value: Any, section: str, errors: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        errors.append(f"{section} must be an object")
        return {}
    return value


def _string_list(value: Any, where: str, errors: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.append(f"{where} must be a list of strings")
        return []
    return value


def _parse_groups(
    value: Any, users: frozenset[str] | None, errors: list[str]
) -> dict[str, frozenset[str]]:
    groups: dict[str, frozenset[str]] = {}
    for name, members in _mapping(value, "groups", errors).items():
        where = f"groups[{name!r}]"
        if not name.startswith("group:"):
            errors.append(f"{where}: group names must start with 'group:'")
            continue
        names: set[str] = set()
        for i, member in enumerate(_string_list(members, where, errors)):
            if "@" in member:
                names.add(user_name(member))  # unknown `name@` matches nothing, as Headscale
            elif member.startswith(("group:", "tag:", "autogroup:", "role:")) or ":" in member:
                errors.append(f"{where}[{i}]: {member!r} is not a user (groups hold users only)")
            elif users is not None and member not in users:
                errors.append(f"{where}[{i}]: unknown user {member!r}")
            else:
                names.add(member)
        groups[name] = frozenset(names)
    return groups


def _parse_hosts(value: Any, errors: list[str]) -> dict[str, IPNetwork]:
    hosts: dict[str, IPNetwork] = {}
    for name, addr in _mapping(value, "hosts", errors).items():
        where = f"hosts[{name!r}]"
        net = parse_network(addr) if isinstance(addr, str) else None
        if net is None:
            errors.append(f"{where}: {addr!r} is not an IP address or CIDR")
        elif ":" in name or "@" in name or not name:
            errors.append(f"{where}: host names cannot be empty or contain ':' or '@'")
        else:
            hosts[name] = net
    return hosts


def _parse_tag_owners(
    value: Any, groups: Mapping[str, frozenset[str]], errors: list[str]
) -> dict[str, tuple[str, ...]]:
    raw = _mapping(value, "tagOwners", errors)
    owners: dict[str, tuple[str, ...]] = {}
    for tag, who in raw.items():
        where = f"tagOwners[{tag!r}]"
        if not tag.startswith("tag:") or len(tag) == len("tag:"):
            errors.append(f"{where}: tag names must look like 'tag:NAME'")
            continue
        entries = _string_list(who, where, errors)
        for i, owner in enumerate(entries):
            if owner.startswith("group:") and owner not in groups:
                errors.append(f"{where}[{i}]: unknown group {owner!r}")
            elif owner.startswith("tag:") and owner not in raw:
                errors.append(f"{where}[{i}]: tag {owner!r} has no tagOwners entry")
            elif owner.startswith(("autogroup:", "role:")):
                errors.append(f"{where}[{i}]: {owner!r} cannot own a tag")
        owners[tag] = tuple(entries)
    return owners


def _parse_acls(value: Any, ctx: AliasContext, errors: list[str]) -> tuple[Rule, ...]:
    if not isinstance(value, list):
        errors.append("acls must be a list of rules")
        return ()
    rules: list[Rule] = []
    for i, raw in enumerate(value):
        where = f"acls[{i}]"
        if not isinstance(raw, dict):
            errors.append(f"{where}: a rule must be an object")
            continue
        before = len(errors)
        for key in sorted(set(raw) - _RULE_KEYS):
            errors.append(f"{where}: unknown field {key!r}")
        if raw.get("action") != "accept":
            errors.append(f"{where}: action {raw.get('action')!r} is not supported (only 'accept')")
        for key in ("src", "dst"):
            if key not in raw:
                errors.append(f"{where}: missing {key!r}")
        srcs = _sources(
            _string_list(raw.get("src", []), f"{where}.src", errors), f"{where}.src", ctx, errors
        )
        dsts: list[DstEntry] = []
        for j, text in enumerate(_string_list(raw.get("dst", []), f"{where}.dst", errors)):
            try:
                dsts.append(parse_dst(text, ctx))
            except ValueError as exc:
                errors.append(f"{where}.dst[{j}]: {exc}")
        proto = _proto(raw, where, errors)
        if len(errors) == before:
            rules.append(Rule(src=tuple(srcs), dst=tuple(dsts), proto=proto, where=where))
    return tuple(rules)


def _sources(texts: list[str], where: str, ctx: AliasContext, errors: list[str]) -> list[Alias]:
    found = (_source(text, f"{where}[{j}]", ctx, errors) for j, text in enumerate(texts))
    return [alias for alias in found if alias is not None]


def _source(text: str, where: str, ctx: AliasContext, errors: list[str]) -> Alias | None:
    try:
        alias = parse_alias(text, ctx)
    except ValueError as exc:
        errors.append(f"{where}: {exc}")
        return None
    if alias.kind == "self":
        # Headscale: autogroup:self only means something relative to a source device.
        errors.append(f"{where}: {text!r} cannot be a source (only a destination)")
        return None
    return alias


def _proto(raw: dict[str, Any], where: str, errors: list[str]) -> int | None:
    if raw.get("proto") in (None, ""):
        return None
    try:
        return parse_proto(raw["proto"])
    except ValueError as exc:
        errors.append(f"{where}.proto: {exc}")
        return None


def _parse_tests(value: Any, ctx: AliasContext, errors: list[str]) -> tuple[PolicyTest, ...]:
    if not isinstance(value, list):
        errors.append("tests must be a list")
        return ()
    tests: list[PolicyTest] = []
    for i, raw in enumerate(value):
        where = f"tests[{i}]"
        if not isinstance(raw, dict):
            errors.append(f"{where}: a test must be an object")
            continue
        before = len(errors)
        for key in sorted(set(raw) - _TEST_KEYS):
            errors.append(f"{where}: unknown field {key!r}")
        src_text = raw.get("src")
        if not isinstance(src_text, str):
            errors.append(f"{where}.src: must be one alias (a string)")
            src_text = ""
        src = _source(src_text, f"{where}.src", ctx, errors) if src_text else None
        targets: dict[str, list[TestTarget]] = {"accept": [], "deny": []}
        for key, found in targets.items():
            for j, text in enumerate(_string_list(raw.get(key, []), f"{where}.{key}", errors)):
                try:
                    alias, port = parse_test_target(text, ctx)
                except ValueError as exc:
                    errors.append(f"{where}.{key}[{j}]: {exc}")
                    continue
                found.append(TestTarget(alias, port, text))
        proto = _proto(raw, where, errors)
        if len(errors) == before and src is not None:
            tests.append(
                PolicyTest(
                    src=src,
                    proto=proto,
                    accept=tuple(targets["accept"]),
                    deny=tuple(targets["deny"]),
                    where=where,
                )
            )
    return tuple(tests)
