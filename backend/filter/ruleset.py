"""Filter rules from the netmap -> one nftables table, as `nft -j` JSON commands (pure).

The table (`inet pcloud`) holds one base chain on the input hook that sends packets arriving on
the WireGuard interface to a regular chain: replies to what this node opened (conntrack reply
direction) and related ICMP errors pass, then one rule per filter rule, then everything else is
dropped.
Packets on any other interface are not looked at. The batch deletes and re-creates the table in
one transaction, so the kernel swaps the whole rule set atomically: no packet ever sees a half
written filter, and open connections keep their conntrack entries (they are not in the table).

Protocols follow the policy: a rule without `proto` covers TCP and UDP on its ports plus ICMP;
ICMP (and any protocol without ports) is matched by protocol alone.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pcloud.server.protocol import FilterRule

FAMILY = "inet"
TABLE = "pcloud"
BASE_CHAIN = "input"
CHAIN = "from_peers"
ICMP = (1, 58)
PORTED = (6, 17, 33, 132)  # tcp, udp, dccp, sctp: the protocols with ports
DEFAULT_PROTOS = (6, 17)  # plus ICMP: a rule without proto

Json = dict[str, Any]


def _table() -> Json:
    return {"family": FAMILY, "name": TABLE}


def _in_table() -> Json:
    return {"family": FAMILY, "table": TABLE}


def _rule(*expr: Json, comment: str | None = None) -> Json:
    rule: Json = {"family": FAMILY, "table": TABLE, "chain": CHAIN, "expr": list(expr)}
    if comment:
        rule["comment"] = comment[:120]  # nft limits comments to 128 bytes
    return {"add": {"rule": rule}}


def _match(left: Json, right: Any) -> Json:
    return {"match": {"op": "==", "left": left, "right": right}}


def _one_or_set(items: list[Any]) -> Any:
    return items[0] if len(items) == 1 else {"set": items}


def _addresses(srcs: list[str]) -> dict[int, list[Any]]:
    """Sources per IP version as nft values; {} when the rule takes any source."""
    out: dict[int, list[Any]] = {}
    for text in srcs:
        if text == "*":
            return {}
        net = ipaddress.ip_network(text, strict=False)
        value: Any = (
            str(net.network_address)
            if net.num_addresses == 1
            else {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}
        )
        out.setdefault(net.version, []).append(value)
    return out


def _ports(ranges: list[tuple[int, int]]) -> Any | None:
    """The dport match's right side, or None for every port."""
    if not ranges or any(low <= 1 and high >= 65535 for low, high in ranges):
        return None
    items: list[Any] = [low if low == high else {"range": [low, high]} for low, high in ranges]
    return _one_or_set(items)


def _proto_groups(rule: FilterRule) -> list[tuple[list[int], bool]]:
    """(protocols, with ports) groups the rule allows."""
    protos = rule.proto or [*DEFAULT_PROTOS, *ICMP]
    ported = [p for p in protos if p in PORTED]
    other = [p for p in protos if p not in PORTED]
    groups = []
    if ported:
        groups.append((ported, True))
    if other:
        groups.append((other, False))
    return groups


def rule_exprs(rule: FilterRule) -> list[list[Json]]:
    """The nft expression lists (one nft rule each) for one filter rule."""
    by_version = _addresses(rule.src)
    sources: list[Json | None] = (
        [
            _match(
                {"payload": {"protocol": "ip" if v == 4 else "ip6", "field": "saddr"}},
                _one_or_set(addrs),
            )
            for v, addrs in sorted(by_version.items())
        ]
        if by_version
        else [None]
    )
    out = []
    for source in sources:
        for protos, ported in _proto_groups(rule):
            expr: list[Json] = [] if source is None else [source]
            expr.append(_match({"meta": {"key": "l4proto"}}, _one_or_set(list(protos))))
            ports = _ports(rule.ports) if ported else None
            if ports is not None:
                expr.append(_match({"payload": {"protocol": "th", "field": "dport"}}, ports))
            expr.append({"accept": None})
            out.append(expr)
    return out


def build(rules: list[FilterRule], interface: str) -> list[Json]:
    """The whole batch: replace our table with one that enforces `rules` on `interface`."""
    cmds: list[Json] = [
        {"add": {"table": _table()}},  # so the delete below never fails on a first install
        {"delete": {"table": _table()}},
        {"add": {"table": _table()}},
        {
            "add": {
                "chain": {
                    **_in_table(),
                    "name": BASE_CHAIN,
                    "type": "filter",
                    "hook": "input",
                    "prio": 0,
                    "policy": "accept",
                }
            }
        },
        {"add": {"chain": {**_in_table(), "name": CHAIN}}},
        {
            "add": {
                "rule": {
                    **_in_table(),
                    "chain": BASE_CHAIN,
                    "expr": [
                        _match({"meta": {"key": "iifname"}}, interface),
                        {"jump": {"target": CHAIN}},
                    ],
                }
            }
        },
        # Only replies to what this node opened pass unchecked: packets a peer sends on a
        # connection it opened are checked like new ones, so taking a port away stops an
        # open connection too (as Tailscale's filter, which checks every inbound packet).
        _rule(
            _match({"ct": {"key": "state"}}, "established"),
            _match({"ct": {"key": "direction"}}, "reply"),
            {"accept": None},
            comment="replies to what this node opened",
        ),
        _rule(
            _match({"ct": {"key": "state"}}, "related"),
            {"accept": None},
            comment="ICMP errors about this node's connections",
        ),
        _rule(_match({"ct": {"key": "state"}}, "invalid"), {"drop": None}),
    ]
    for rule in rules:
        for expr in rule_exprs(rule):
            cmds.append(_rule(*expr, comment=rule.why or None))
    cmds.append(_rule({"counter": None}, {"drop": None}, comment="not allowed by the policy"))
    return cmds


def delete() -> list[Json]:
    """Remove our table (and only ours); a no-op when it is absent."""
    return [{"add": {"table": _table()}}, {"delete": {"table": _table()}}]


def nft_rule_count(batch: list[Json]) -> int:
    return sum(1 for c in batch if "rule" in c.get("add", {}))
