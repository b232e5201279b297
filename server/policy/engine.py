"""Who may reach whom: evaluate a compiled policy over the live nodes.

`PeerIndex` answers the two questions the server asks: which peers a node sees (`peers_of`,
either direction of reachability on any port, as Headscale's BuildPeerMap) and whether one node
may reach another on a port (`can_reach`). Each rule is checked against the asking node in O(1)
and only the matching side is expanded through the `NodeSet` indexes, so `peers_of` costs about
its answer plus the number of rules instead of Headscale's all-pairs O(n^2) map.

Without a document the built-in default policy applies: every node reaches server-role nodes,
a user's (untagged) devices reach each other, and an admin's devices reach everything. Under any
policy the built-in server rule (builtin.py) is added: servers reach each other on what K3s, etcd
and coordination need.

ICMP has no ports: a rule that allows ICMP to a node allows it whatever ports the rule lists (as
Tailscale's packet filter, which matches ICMP by address only).

`run_tests` runs a document's `tests` against an index; `view_changes` diffs two indexes for the
nodes a change touches (what `POST /acl/check` shows).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Set
from dataclasses import dataclass, field

from .aliases import (
    ANY_PORTS,
    Alias,
    DstEntry,
    IPNetwork,
    Rule,
    parse_proto,
    port_allowed,
    proto_allowed,
)
from .builtin import BUILTIN_RULES
from .document import Policy, PolicyTest, TestTarget
from .nodeset import NodeFacts, NodeSet

__all__ = ["NodeFacts", "PeerIndex", "TestOutcome", "run_tests", "view_changes", "DEFAULT_RULES"]

_ALL = Alias("all", "*")
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        (_ALL,),
        (DstEntry(Alias("role", "role:server", name="server"), ANY_PORTS, "role:server:*"),),
        None,
        "default: everyone reaches servers",
    ),
    Rule(
        (Alias("member", "autogroup:member"),),
        (DstEntry(Alias("self", "autogroup:self"), ANY_PORTS, "autogroup:self:*"),),
        None,
        "default: a user's devices reach each other",
    ),
    Rule(
        (Alias("admins", "(admins)"),),
        (DstEntry(_ALL, ANY_PORTS, "*:*"),),
        None,
        "default: admins reach everything",
    ),
)


# Index generations: a new number at every change of any index (copies included), so a cache
# keyed on it (the per-node packet filter) is never stale.
_GENERATIONS = itertools.count(1)
ICMP_PROTOCOLS = frozenset({1, 58})


class PeerIndex:
    def __init__(self, policy: Policy | None, admins: set[str]) -> None:
        self._nodes = NodeSet()
        self._nodes.admins = frozenset(admins)
        self._policy: Policy | None = None
        self._rules: tuple[Rule, ...] = DEFAULT_RULES + BUILTIN_RULES
        self.generation = next(_GENERATIONS)
        self.set_policy(policy)

    @property
    def policy(self) -> Policy | None:
        return self._policy

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules in force: the document's (or the default ones), then the built-in ones."""
        return self._rules

    def matches(self, alias: Alias, node_id: int) -> bool:
        """Whether node `node_id` matches a non-relative alias (O(1))."""
        node = self._nodes.nodes.get(node_id)
        return node is not None and self._nodes.contains(alias, node)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes.nodes

    def node(self, node_id: int) -> NodeFacts | None:
        return self._nodes.nodes.get(node_id)

    def set_nodes(self, nodes: Iterable[NodeFacts]) -> None:
        """Replace every node (bulk load)."""
        admins = self._nodes.admins
        self._nodes = NodeSet()
        self._nodes.admins = admins
        for node in nodes:
            self._nodes.add(node)
        self._nodes.track_networks(self._policy.networks if self._policy else ())
        self.generation = next(_GENERATIONS)

    def upsert(self, node: NodeFacts) -> None:
        self._nodes.add(node)
        self.generation = next(_GENERATIONS)

    def remove(self, node_id: int) -> None:
        self._nodes.remove(node_id)
        self.generation = next(_GENERATIONS)

    def set_admins(self, admins: set[str]) -> None:
        if frozenset(admins) != self._nodes.admins:
            self._nodes.admins = frozenset(admins)
            self.generation = next(_GENERATIONS)

    def set_policy(self, policy: Policy | None) -> None:
        self._policy = policy
        self._rules = (DEFAULT_RULES if policy is None else policy.rules) + BUILTIN_RULES
        self._nodes.track_networks(policy.networks if policy else ())
        self.generation = next(_GENERATIONS)

    def copy(self) -> PeerIndex:
        """An independent index (O(nodes), no policy work), e.g. for `POST /acl/check`."""
        other = PeerIndex.__new__(PeerIndex)
        other._nodes = self._nodes.copy()
        other._policy = self._policy
        other._rules = self._rules
        other.generation = next(_GENERATIONS)
        return other

    def peers_of(self, node_id: int) -> set[int]:
        """Nodes that `node_id` may reach or that may reach it, on any port; never itself.
        Unknown ids have no peers."""
        node = self._nodes.nodes.get(node_id)
        if node is None:
            return set()
        ns = self._nodes
        peers: set[int] = set()
        for rule in self._rules:
            # Outgoing: node is a source, so every destination of the rule is a peer.
            if any(ns.contains(a, node) for a in rule.src):
                for entry in rule.dst:
                    if entry.alias.kind == "self":
                        peers.update(ns.same_user(node))
                    else:
                        peers.update(ns.members(entry.alias))
            # Incoming: node is a destination, so the rule's sources are peers.
            for entry in rule.dst:
                if entry.alias.kind == "self":
                    # Only the same user's devices that the rule's sources include.
                    peers.update(s for s in ns.same_user(node) if self._is_src(rule, s))
                elif ns.contains(entry.alias, node):
                    for alias in rule.src:
                        peers.update(ns.members(alias))
                    break  # the other entries cannot add sources beyond all of them
        peers.discard(node_id)
        return peers

    def _is_src(self, rule: Rule, node_id: int) -> bool:
        node = self._nodes.nodes[node_id]
        return any(self._nodes.contains(a, node) for a in rule.src)

    def can_reach(
        self, src_id: int, dst_id: int, port: int | None = None, proto: str | None = None
    ) -> bool:
        """Whether `src_id` may open traffic to `dst_id` (on `port`/`proto` when given; a
        rule without `proto` covers TCP, UDP and ICMP). Unknown ids reach nothing; an unknown
        `proto` name raises ValueError."""
        nodes = self._nodes.nodes
        src, dst = nodes.get(src_id), nodes.get(dst_id)
        if src is None or dst is None:
            return False
        if src_id == dst_id:
            return True
        wanted = _proto_number(proto)
        if wanted in ICMP_PROTOCOLS:
            port = None  # ICMP has no ports: see the module docstring
        for rule in self._rules:
            if not proto_allowed(rule.proto, wanted):
                continue
            if not any(self._nodes.contains(a, src) for a in rule.src):
                continue
            for entry in rule.dst:
                if port_allowed(entry.ports, port) and self._dst_matches(entry.alias, src, dst):
                    return True
        return False

    def _dst_matches(self, alias: Alias, src: NodeFacts, dst: NodeFacts) -> bool:
        if alias.kind == "self":
            return not src.tags and not dst.tags and src.user == dst.user
        return self._nodes.contains(alias, dst)

    def can_reach_network(
        self, src_id: int, net: IPNetwork, port: int | None = None, proto: str | None = None
    ) -> bool:
        """Whether a rule lets `src_id` reach every address of `net` (a host or CIDR that need
        not be a node): a test may name a `hosts` entry no node has, as in Headscale."""
        src = self._nodes.nodes.get(src_id)
        if src is None:
            return False
        wanted = _proto_number(proto)
        if wanted in ICMP_PROTOCOLS:
            port = None
        for rule in self._rules:
            if not proto_allowed(rule.proto, wanted):
                continue
            if not any(self._nodes.contains(a, src) for a in rule.src):
                continue
            for entry in rule.dst:
                covers = entry.alias.kind == "all" or (
                    entry.alias.network is not None
                    and entry.alias.network.version == net.version
                    and net.subnet_of(entry.alias.network)  # type: ignore[arg-type]
                )
                if covers and port_allowed(entry.ports, port):
                    return True
        return False

    def resolve(self, alias: Alias) -> Set[int]:
        """The ids matching a non-relative alias (read-only view)."""
        return self._nodes.members(alias)

    def same_user(self, node_id: int) -> Set[int]:
        node = self._nodes.nodes.get(node_id)
        return self._nodes.same_user(node) if node is not None else frozenset()


def _proto_number(proto: str | None) -> int | None:
    return None if proto is None else parse_proto(proto)


@dataclass
class TestOutcome:
    """The result of one `tests` entry; `errors` name the test index and the failing entry."""

    __test__ = False  # keep pytest from collecting this class when a test module imports it

    src: str
    passed: bool
    errors: list[str] = field(default_factory=list)


_MAX_PAIRS = 3  # failing pairs quoted per entry: enough to debug, short enough to read


def run_tests(policy: Policy, index: PeerIndex) -> list[TestOutcome]:
    """Run `policy.tests` over the nodes of `index` (evaluated under `policy`, whatever policy
    the index holds; the index itself is never modified)."""
    if index.policy is not policy:
        index = index.copy()
        index.set_policy(policy)
    return [_run_test(test, index) for test in policy.tests]


def _run_test(test: PolicyTest, index: PeerIndex) -> TestOutcome:
    errors: list[str] = []
    srcs = sorted(index.resolve(test.src))
    if not srcs:
        errors.append(f"{test.where}: source {test.src.text!r} has no devices")
    proto = str(test.proto) if test.proto is not None else None
    for kind, targets in (("accept", test.accept), ("deny", test.deny)):
        for j, target in enumerate(targets):
            bad = _check_target(index, srcs, target, proto, want=kind == "accept")
            if bad:
                verb = "cannot reach" if kind == "accept" else "can reach"
                shown = ", ".join(bad[:_MAX_PAIRS]) + (" ..." if len(bad) > _MAX_PAIRS else "")
                errors.append(
                    f"{test.where}.{kind}[{j}]: {test.src.text} {verb} {target.text} ({shown})"
                )
    return TestOutcome(src=test.src.text, passed=not errors, errors=errors)


def _check_target(
    index: PeerIndex, srcs: list[int], target: TestTarget, proto: str | None, want: bool
) -> list[str]:
    """The "src -> dst" pairs whose reachability differs from `want`."""
    bad: list[str] = []
    network = target.alias.network
    for s in srcs:
        if target.alias.kind == "self":
            dsts: Set[int] = index.same_user(s)
        else:
            dsts = index.resolve(target.alias)
        if not dsts and network is not None:
            # An address no node holds: judge the rules by address, as Headscale does.
            if index.can_reach_network(s, network, target.port, proto) != want:
                bad.append(f"node {s} -> {network}")
            continue
        for d in sorted(dsts):
            if d != s and index.can_reach(s, d, target.port, proto) != want:
                bad.append(f"node {s} -> node {d}")
    return bad


def view_changes(
    before: PeerIndex, after: PeerIndex, node_ids: Iterable[int]
) -> dict[int, tuple[set[int], set[int]]]:
    """For each node whose peer list differs: (peers it gains, peers it loses)."""
    changes: dict[int, tuple[set[int], set[int]]] = {}
    for nid in node_ids:
        old, new = before.peers_of(nid), after.peers_of(nid)
        if old != new:
            changes[nid] = (new - old, old - new)
    return changes
