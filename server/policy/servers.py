"""What a policy does to server-to-server reach: losses that `PUT /acl` refuses unless forced,
and the K3s/etcd ports the document alone would cut (a dry-run warning; the built-in rule keeps
them open anyway).

Reach of one node to another is, per IP protocol, the union of the port ranges the rules allow
(ICMP counted as the whole range: it has no ports). Servers are few, so comparing every ordered
pair of them is cheap.
"""

from __future__ import annotations

from collections.abc import Iterable

from .aliases import DEFAULT_PROTOCOLS, Alias, Rule
from .builtin import BUILTIN_RULES, PORT_NAMES, SERVER_TCP_PORTS, SERVER_UDP_PORTS
from .engine import ICMP_PROTOCOLS, PeerIndex
from .filter import merge_ports

Reach = dict[int, list[tuple[int, int]]]
SERVERS = Alias("role", "role:server", name="server")
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp"}
_MAX_RANGES = 4


def reach(index: PeerIndex, rules: Iterable[Rule], src: int, dst: int) -> Reach:
    """Per protocol, the port ranges on which `src` may open traffic to `dst` under `rules`."""
    same_user = dst in index.same_user(src)
    found: dict[int, list[tuple[int, int]]] = {}
    for rule in rules:
        if not any(index.matches(a, src) for a in rule.src):
            continue
        for entry in rule.dst:
            hit = same_user if entry.alias.kind == "self" else index.matches(entry.alias, dst)
            if not hit:
                continue
            for proto in (rule.proto,) if rule.proto is not None else sorted(DEFAULT_PROTOCOLS):
                ports = [(0, 65535)] if proto in ICMP_PROTOCOLS else list(entry.ports)
                found.setdefault(proto, []).extend(ports)
    return {p: merge_ports(r) for p, r in found.items()}


def subtract(have: list[tuple[int, int]], take: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of `have` not covered by `take` (both merged range lists)."""
    out: list[tuple[int, int]] = []
    for low, high in have:
        cur = low
        for t_low, t_high in take:
            if t_high < cur or t_low > high:
                continue
            if t_low > cur:
                out.append((cur, t_low - 1))
            cur = max(cur, t_high + 1)
            if cur > high:
                break
        if cur <= high:
            out.append((cur, high))
    return out


def describe(proto: int, ranges: list[tuple[int, int]]) -> str:
    name = PROTO_NAMES.get(proto, f"proto {proto}")
    if proto in ICMP_PROTOCOLS:
        return name
    if ranges in ([(0, 65535)], [(1, 65535)]):
        return f"{name} (all ports)"
    shown = []
    ranges = [(max(low, 1), high) for low, high in ranges]  # port 0 is no port anyone uses
    for low, high in ranges[:_MAX_RANGES]:
        text = str(low) if low == high else f"{low}-{high}"
        label = PORT_NAMES.get((proto, low))
        shown.append(f"{text} ({label})" if label else text)
    more = f" and {len(ranges) - _MAX_RANGES} more ranges" if len(ranges) > _MAX_RANGES else ""
    return f"{name} {', '.join(shown)}{more}"


def _server_pairs(index: PeerIndex) -> list[tuple[int, int]]:
    servers = sorted(index.resolve(SERVERS))
    return [(a, b) for a in servers for b in servers if a != b]


def reach_losses(before: PeerIndex, after: PeerIndex, names: dict[int, str]) -> list[str]:
    """One line per server pair that loses reach under `after` compared with `before`."""
    lines = []
    for a, b in _server_pairs(after):
        old = reach(before, before.rules, a, b)
        new = reach(after, after.rules, a, b)
        lost = []
        for proto in sorted(old):
            gone = subtract(old[proto], new.get(proto, []))
            if gone:
                lost.append(describe(proto, gone))
        if lost:
            lines.append(f"{names.get(a, a)} -> {names.get(b, b)} loses {'; '.join(lost)}")
    return lines


def cut_infrastructure(index: PeerIndex) -> str | None:
    """A warning naming the K3s/etcd/coordination ports the document's own rules (without the
    built-in one) leave closed between some servers, or None."""
    own = [r for r in index.rules if r not in BUILTIN_RULES]
    needed = {6: merge_ports(SERVER_TCP_PORTS), 17: merge_ports(SERVER_UDP_PORTS)}
    missing: dict[int, list[tuple[int, int]]] = {}
    for a, b in _server_pairs(index):
        got = reach(index, own, a, b)
        for proto, ranges in needed.items():
            gone = subtract(ranges, got.get(proto, []))
            if gone:
                missing[proto] = merge_ports(missing.get(proto, []) + gone)
    if not missing:
        return None
    ports = "; ".join(describe(p, r) for p, r in sorted(missing.items()))
    return (
        f"the policy's own rules would cut K3s/etcd/coordination traffic between servers"
        f" ({ports}); the built-in rule keeps these open"
    )


FORCE_HINT = (
    "servers keep K3s, etcd and coordination through the built-in rule; to keep the rest add"
    ' {"action": "accept", "src": ["role:server"], "dst": ["role:server:*"]},'
    " or apply it anyway with force (PUT /acl?force=true, `pcloud-server admin policy set --force`)"
)


def refusal(losses: list[str]) -> str:
    """The message of a `PUT /acl` refused because servers would lose reach."""
    return "this policy takes reach away between servers: " + "; ".join(losses) + ". " + FORCE_HINT
