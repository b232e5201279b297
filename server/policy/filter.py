"""Each node's packet filter: the policy's rules seen from the receiving side.

`FilterCache.rules(index, node_id)` answers "who may reach this node, with which protocol, on
which ports": for every rule (document or default rules, then the built-in server rule) whose
destination matches the node, the rule's sources resolved to overlay addresses (collapsed into
prefixes), its protocol and the ports of the matching destinations. The backend enforces the
answer with nftables on its WireGuard interface (DESIGN section 10).

Resolving an alias such as `autogroup:member` can list thousands of addresses, and every node
whose filter names it needs the same list: expansions are cached per index generation (a number
the index changes at every mutation), as are the rendered filters, so a long poll answered many
times between changes renders its filter once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from ..protocol import FilterRule
from .aliases import Alias, Ports, Rule
from .engine import PeerIndex
from .nodeset import NodeFacts

ANY_SOURCE = "*"
DEFAULT_FILTER = FilterRule(
    src=[ANY_SOURCE],
    ports=[(0, 65535)],
    src_aliases=["(any visible peer)"],
    why="default policy: visible peers reach each other on every port",
)


def merge_ports(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping, adjacent ranges joined."""
    out: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def collapse(addresses: Iterable[str]) -> list[str]:
    """Addresses and prefixes collapsed into the fewest prefixes (hosts written bare)."""
    nets: dict[int, list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {4: [], 6: []}
    for text in addresses:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue  # a node without a usable address never matches anything
        nets[net.version].append(net)
    out: list[str] = []
    for version in (4, 6):
        for net in ipaddress.collapse_addresses(nets[version]):  # type: ignore[type-var]
            single = net.num_addresses == 1
            out.append(str(net.network_address) if single else str(net))
    return out


class FilterCache:
    """Per-node filters of one state, valid while the index generation does not change."""

    def __init__(self) -> None:
        self._generation = -1
        self._expanded: dict[Alias, tuple[str, ...]] = {}
        self._filters: dict[int, list[FilterRule]] = {}
        self.json: dict[int, bytes] = {}  # rendered by the netmap builder, same lifetime

    def _check(self, index: PeerIndex) -> None:
        if index.generation != self._generation:
            self._generation = index.generation
            self._expanded.clear()
            self._filters.clear()
            self.json.clear()

    def valid_json(self, index: PeerIndex, node_id: int) -> bytes | None:
        self._check(index)
        return self.json.get(node_id)

    def rules(self, index: PeerIndex, node_id: int) -> list[FilterRule]:
        self._check(index)
        found = self._filters.get(node_id)
        if found is None:
            found = self._filters[node_id] = compute(index, node_id, self._expand)
        return found

    def _expand(self, index: PeerIndex, alias: Alias) -> tuple[str, ...]:
        found = self._expanded.get(alias)
        if found is None:
            found = self._expanded[alias] = _sources(index, alias, index.resolve(alias))
        return found


def _sources(index: PeerIndex, alias: Alias, ids: Iterable[int]) -> tuple[str, ...]:
    if alias.kind == "all":
        return (ANY_SOURCE,)
    if alias.kind == "prefix" and alias.network is not None:
        return (str(alias.network),)
    addrs = []
    for nid in ids:
        node = index.node(nid)
        if node is not None:
            addrs.append(node.address)
    return tuple(collapse(addrs))


Expander = Callable[[PeerIndex, Alias], tuple[str, ...]]


def _expand_uncached(index: PeerIndex, alias: Alias) -> tuple[str, ...]:
    return _sources(index, alias, index.resolve(alias))


def compute(
    index: PeerIndex, node_id: int, expand: Expander = _expand_uncached
) -> list[FilterRule]:
    """The filter of `node_id` under `index` (`expand` resolves a source alias, maybe cached)."""
    node = index.node(node_id)
    if node is None:
        return []
    if index.policy is None:
        return [DEFAULT_FILTER.model_copy()]

    def resolve(alias: Alias) -> tuple[str, ...]:
        return expand(index, alias)

    out: list[FilterRule] = []
    seen: set[tuple[tuple[str, ...], tuple[int, ...], tuple[tuple[int, int], ...]]] = set()
    for rule in index.rules:
        ports, self_ports = _dst_ports(index, rule, node, node_id)
        if ports:
            srcs: list[str] = []
            for alias in rule.src:
                srcs += resolve(alias)
            _add(out, seen, rule, srcs, ports, [a.text for a in rule.src], node.address)
        if self_ports:
            # autogroup:self: only the same user's devices that the rule's sources include.
            mine = [
                n.address
                for nid in index.same_user(node_id)
                if (n := index.node(nid)) is not None
                and any(index.matches(a, nid) for a in rule.src)
            ]
            texts = [a.text for a in rule.src] + ["autogroup:self"]
            _add(out, seen, rule, collapse(mine), self_ports, texts, node.address)
    return out


def _dst_ports(
    index: PeerIndex, rule: Rule, node: NodeFacts, node_id: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The ports of `rule` that name this node: by its own aliases, and (untagged nodes only)
    through `autogroup:self`, which the caller narrows to the same user's devices."""
    ports: list[tuple[int, int]] = []
    self_ports: list[tuple[int, int]] = []
    for entry in rule.dst:
        if entry.alias.kind == "self":
            if not node.tags:
                self_ports += entry.ports
        elif index.matches(entry.alias, node_id):
            ports += entry.ports
    return ports, self_ports


def signature(index: PeerIndex, node_id: int) -> tuple[object, ...]:
    """What the node's filter is made of, without expanding any alias: equal signatures under
    two policies over the same nodes mean equal filters (so a policy swap finds the nodes whose
    filter changed in O(nodes x rules), not O(nodes x sources))."""
    node = index.node(node_id)
    if node is None:
        return ()
    if index.policy is None:
        return ("default",)
    parts: list[object] = []
    for rule in index.rules:
        ports, self_ports = _dst_ports(index, rule, node, node_id)
        if ports or self_ports:
            parts.append((rule.src, rule.proto, rule.where, tuple(ports), tuple(self_ports)))
    return tuple(parts)


def _add(
    out: list[FilterRule],
    seen: set[tuple[tuple[str, ...], tuple[int, ...], tuple[tuple[int, int], ...]]],
    rule: Rule,
    srcs: list[str],
    ports: Ports | list[tuple[int, int]],
    texts: list[str],
    own: str,
) -> None:
    if ANY_SOURCE in srcs:
        srcs = [ANY_SOURCE]
    else:
        srcs = [s for s in dict.fromkeys(srcs) if s != own]  # own traffic never crosses the tunnel
    if not srcs:
        return
    proto = [rule.proto] if rule.proto is not None else []
    merged = merge_ports(ports)
    key = (tuple(srcs), tuple(proto), tuple(merged))
    if key in seen:
        return  # e.g. the default "servers" rule and the built-in one both say the same
    seen.add(key)
    out.append(FilterRule(src=srcs, proto=proto, ports=merged, src_aliases=texts, why=rule.where))
