"""The packet filter in policy words: who may reach this device, with what, on which ports
(`pcloud filter`, and the one-line summary in `pcloud status`). Pure functions."""

from __future__ import annotations

import ipaddress

from rich.table import Table

from pcloud.backend.localapi.schemas import FilterStatus, Status
from pcloud.server.protocol import FilterRule

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}
PORTED = (6, 17, 33, 132)


def summary(f: FilterStatus) -> str:
    """`packet filter: in force, 7 rules` and the like."""
    if f.state == "in_force":
        return (
            f"packet filter: in force, {_count(f.rules, 'rule')} "
            f"({_count(f.nft_rules, 'nftables rule')})"
        )
    if f.state == "failed":
        return f"packet filter: FAILED ({f.reason}); tunnels withheld"
    if f.state == "none":
        return "packet filter: none (the coordination server sends no filter)"
    return "packet filter: off (not connected)"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def ports_text(ranges: list[tuple[int, int]]) -> str:
    if not ranges or any(low <= 1 and high >= 65535 for low, high in ranges):
        return "all ports"
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def what(rule: FilterRule) -> str:
    """`tcp 22, 443`, `tcp, udp all ports; icmp`."""
    protos = rule.proto or [6, 17, 1]
    ported = [PROTO_NAMES.get(p, str(p)) for p in protos if p in PORTED]
    other = [PROTO_NAMES.get(p, f"proto {p}") for p in protos if p not in PORTED]
    parts = []
    if ported:
        parts.append(f"{', '.join(ported)} {ports_text(rule.ports)}")
    if other:
        parts.append(", ".join(other))
    return "; ".join(parts)


def who(rule: FilterRule, status: Status) -> str:
    """The rule's aliases, and the peers they cover by name."""
    aliases = ", ".join(rule.src_aliases) or ", ".join(rule.src)
    if rule.src == ["*"]:
        # the default policy's alias already says it in brackets: "(any visible peer)"
        return aliases if aliases.startswith("(") else f"{aliases} (any peer)"
    nets = [ipaddress.ip_network(s, strict=False) for s in rule.src]
    names = sorted(
        p.hostname for p in status.peers if any(ipaddress.ip_address(p.address) in n for n in nets)
    )
    return f"{aliases} ({', '.join(names) or 'no peer now'})"


def filter_table(rules: list[FilterRule], status: Status) -> Table:
    table = Table(box=None, pad_edge=False, header_style="")
    table.add_column("WHO MAY REACH THIS DEVICE", overflow="fold")
    table.add_column("WITH", overflow="fold")
    table.add_column("RULE", overflow="fold")
    for rule in rules:
        table.add_row(who(rule, status), what(rule), rule.why or "-")
    return table
