"""Syntax of policy aliases, port lists and protocols, and the compiled rule shapes.

This module turns the strings of a policy document (`"group:ops"`, `"tag:server:22,443"`,
`"[fd7a::1]:80"`, `"tcp"`) into small immutable values. It knows the sections a rule may refer to
(groups, hosts, tag owners, known users) through an `AliasContext`, but nothing about nodes:
matching aliases against nodes is the engine's job.

Every parse function raises `ValueError` with a message naming the alias; the document parser
prefixes it with the rule's location (e.g. "acls[2].dst[0]").
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

# "admins" never comes from a document: it exists for the built-in default policy, whose admin
# rule must follow the live admin list without recompiling anything.
AliasKind = Literal[
    "all", "user", "group", "tag", "member", "self", "tagged", "role", "prefix", "admins"
]

PortRange = tuple[int, int]
Ports = tuple[PortRange, ...]
ANY_PORTS: Ports = ((0, 65535),)

AUTOGROUPS: dict[str, AliasKind] = {
    "autogroup:member": "member",
    "autogroup:self": "self",
    "autogroup:tagged": "tagged",
}
ROLES = ("server", "client")
# What a port list may be made of; anything else after the last colon means the port is missing.
_PORTISH = re.compile(r"[0-9*,\- ]+")

# Headscale's protocol names (policy v2 types.go); numbers are accepted too.
PROTOCOLS: dict[str, int] = {
    "icmp": 1,
    "igmp": 2,
    "ipv4": 4,
    "ip-in-ip": 4,
    "tcp": 6,
    "egp": 8,
    "igp": 9,
    "udp": 17,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "ipv6-icmp": 58,
    "sctp": 132,
    "fc": 133,
}
# A rule without `proto` means TCP, UDP and ICMP (tailcfg.FilterRule), not every protocol.
DEFAULT_PROTOCOLS = frozenset({1, 6, 17, 58})


@dataclass(frozen=True)
class Alias:
    """One resolved alias. `text` is what the document said, kept for messages."""

    kind: AliasKind
    text: str
    name: str = ""  # user name, group name, tag or role, depending on kind
    members: frozenset[str] = frozenset()  # a group's user names
    network: IPNetwork | None = None  # IP/CIDR and hosts aliases


@dataclass(frozen=True)
class DstEntry:
    alias: Alias
    ports: Ports
    text: str


@dataclass(frozen=True)
class Rule:
    """A compiled `accept` rule; `where` locates it in the document for messages."""

    src: tuple[Alias, ...]
    dst: tuple[DstEntry, ...]
    proto: int | None
    where: str


@dataclass(frozen=True)
class AliasContext:
    """The document sections an alias may refer to. `users` None means "not known": any plain
    name that is not a host is then taken as a user name."""

    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    hosts: Mapping[str, IPNetwork] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()
    users: frozenset[str] | None = None


def parse_network(text: str) -> IPNetwork | None:
    """An IP or CIDR as a network (a bare IP is a /32 or /128), or None if it is neither."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def user_name(text: str) -> str:
    """`alice@` names user `alice`; `alice@example.com` names a user called exactly that."""
    return text[:-1] if text.endswith("@") else text


def parse_alias(text: str, ctx: AliasContext) -> Alias:
    """Resolve one source alias (no port) in Headscale's order: IP/CIDR, `*`, `name@`, `group:`,
    `tag:`, `autogroup:`, then PCloud's `role:`, a `hosts` name, and last a plain user name."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"alias {text!r} is not a non-empty string")
    net = parse_network(text)
    if net is not None:
        return Alias("prefix", text, network=net)
    if text == "*":
        return Alias("all", text)
    if "@" in text:
        # An unknown `name@` matches nothing rather than failing, as in Headscale.
        return Alias("user", text, name=user_name(text))
    if text.startswith("group:"):
        if text not in ctx.groups:
            raise ValueError(f"unknown group {text!r}")
        return Alias("group", text, name=text, members=ctx.groups[text])
    if text.startswith("tag:"):
        if text not in ctx.tags:
            raise ValueError(f"tag {text!r} has no tagOwners entry")
        return Alias("tag", text, name=text)
    if text.startswith("autogroup:"):
        if text not in AUTOGROUPS:
            raise ValueError(
                f"unknown autogroup {text!r} (supported: {', '.join(sorted(AUTOGROUPS))})"
            )
        return Alias(AUTOGROUPS[text], text)
    if text.startswith("role:"):
        role = text[len("role:") :]
        if role not in ROLES:
            raise ValueError(f"unknown role {text!r} (use role:server or role:client)")
        return Alias("role", text, name=role)
    if text in ctx.hosts:
        return Alias("prefix", text, network=ctx.hosts[text])
    if ":" in text or any(c.isspace() for c in text):
        raise ValueError(f"invalid alias {text!r}")
    if ctx.users is not None and text not in ctx.users:
        raise ValueError(f"unknown name {text!r}: not a host, and no user has that name")
    return Alias("user", text, name=text)


def parse_port_number(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"invalid port {text!r}")
    port = int(text)
    if port == 0:
        raise ValueError("port 0 is not allowed")
    if port > 65535:
        raise ValueError(f"port {port} is out of range (1-65535)")
    return port


def parse_ports(text: str) -> Ports:
    """`*`, `22`, `80,443`, `8000-8099` (and combinations of the last three)."""
    if text == "*":
        return ANY_PORTS
    ranges: list[PortRange] = []
    for part in text.split(","):
        low_text, dash, high_text = part.partition("-")
        low = parse_port_number(low_text.strip())
        high = parse_port_number(high_text.strip()) if dash else low
        if high < low:
            raise ValueError(f"port range {part!r} is reversed")
        ranges.append((low, high))
    return tuple(ranges)


def split_host_port(text: str) -> tuple[str, str]:
    """Split `alias:ports` at the LAST colon, as Headscale does; `[v6]` loses its brackets."""
    if not isinstance(text, str):
        raise ValueError(f"destination {text!r} is not a string")
    host, colon, ports = text.rpartition(":")
    if not colon or not host:
        raise ValueError(f"destination {text!r} has no port (write {text}:* for any port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, ports


def parse_dst(text: str, ctx: AliasContext) -> DstEntry:
    host, port_text = split_host_port(text)
    if not _PORTISH.fullmatch(port_text):
        # `tag:server` splits into `tag` + `server`: say what is really wrong.
        raise ValueError(f"destination {text!r} has no port (write {text}:* for any port)")
    return DstEntry(parse_alias(host, ctx), parse_ports(port_text), text)


def parse_test_target(text: str, ctx: AliasContext) -> tuple[Alias, int]:
    """A test destination: `alias:port` with exactly one port."""
    host, port_text = split_host_port(text)
    if not _PORTISH.fullmatch(port_text):
        raise ValueError(f"test destination {text!r} has no port")
    if not port_text.strip().isdigit():
        raise ValueError(f"test destination {text!r} must name exactly one port")
    return parse_alias(host, ctx), parse_port_number(port_text.strip())


def parse_proto(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip().lower()
    else:
        raise ValueError(f"proto {value!r} is not a string")
    if text in PROTOCOLS:
        return PROTOCOLS[text]
    if text.isdigit() and 0 < int(text) < 256:
        return int(text)
    raise ValueError(f"unknown proto {value!r}")


def proto_allowed(rule_proto: int | None, wanted: int | None) -> bool:
    if wanted is None:
        return True
    if rule_proto is None:
        return wanted in DEFAULT_PROTOCOLS
    return rule_proto == wanted


def port_allowed(ports: Ports, port: int | None) -> bool:
    return port is None or any(low <= port <= high for low, high in ports)
