"""The nodes a policy is evaluated over, indexed so that an alias resolves without a scan.

`NodeSet` keeps nodes by user, tag, role, tagged/untagged and overlay address, plus the members
of each CIDR the current policy mentions, all updated incrementally by `add`/`remove`. Resolving
an alias (`members`) then costs about the size of its answer, and testing one node against an
alias (`contains`) is O(1); this is what keeps `peers_of` from scanning 10,000 nodes per rule.

Ownership (as Headscale): a tagged node belongs to its tags, so user, group and
`autogroup:member` aliases only ever match untagged nodes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Set
from dataclasses import dataclass

from .aliases import Alias, IPAddr, IPNetwork

_EMPTY: frozenset[int] = frozenset()


@dataclass(frozen=True)
class NodeFacts:
    """What the policy needs to know about a node."""

    id: int
    user: str
    role: str  # "client" | "server"
    tags: tuple[str, ...]
    address: str  # overlay IPv4/IPv6


def _add(index: dict[str, set[int]], key: str, node_id: int) -> None:
    index.setdefault(key, set()).add(node_id)


def _discard(index: dict[str, set[int]], key: str, node_id: int) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.discard(node_id)
        if not ids:
            del index[key]  # so the maps stay as small as the live keys


def _parse_address(text: str) -> IPAddr | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None  # a node without a usable address just never matches an IP alias


class NodeSet:
    def __init__(self) -> None:
        self.nodes: dict[int, NodeFacts] = {}
        self.admins: frozenset[str] = frozenset()
        self._ip: dict[int, IPAddr | None] = {}
        self._by_ip: dict[IPAddr, set[int]] = {}
        self._by_user: dict[str, set[int]] = {}  # untagged nodes only: see module docstring
        self._by_tag: dict[str, set[int]] = {}
        self._by_role: dict[str, set[int]] = {}
        self._untagged: set[int] = set()
        self._tagged: set[int] = set()
        # Members of each multi-address network the policy uses; single addresses use _by_ip.
        self._networks: dict[IPNetwork, set[int]] = {}

    def copy(self) -> NodeSet:
        other = NodeSet()
        other.nodes = dict(self.nodes)
        other.admins = self.admins
        other._ip = dict(self._ip)
        other._by_ip = {k: set(v) for k, v in self._by_ip.items()}
        other._by_user = {k: set(v) for k, v in self._by_user.items()}
        other._by_tag = {k: set(v) for k, v in self._by_tag.items()}
        other._by_role = {k: set(v) for k, v in self._by_role.items()}
        other._untagged = set(self._untagged)
        other._tagged = set(self._tagged)
        other._networks = {k: set(v) for k, v in self._networks.items()}
        return other

    def track_networks(self, networks: Iterable[IPNetwork]) -> None:
        """Index the members of these networks (one scan each, then kept up to date)."""
        wanted = {n for n in networks if n.num_addresses > 1}
        self._networks = {n: self._networks.get(n) or self._scan(n) for n in wanted}

    def _scan(self, net: IPNetwork) -> set[int]:
        return {nid for nid, ip in self._ip.items() if ip is not None and ip in net}

    def add(self, node: NodeFacts) -> None:
        if node.id in self.nodes:
            self.remove(node.id)
        nid = node.id
        self.nodes[nid] = node
        ip = _parse_address(node.address)
        self._ip[nid] = ip
        if ip is not None:
            self._by_ip.setdefault(ip, set()).add(nid)
            for net, members in self._networks.items():
                if ip in net:
                    members.add(nid)
        _add(self._by_role, node.role, nid)
        if node.tags:
            self._tagged.add(nid)
            for tag in node.tags:
                _add(self._by_tag, tag, nid)
        else:
            self._untagged.add(nid)
            _add(self._by_user, node.user, nid)

    def remove(self, node_id: int) -> None:
        node = self.nodes.pop(node_id, None)
        if node is None:
            return
        ip = self._ip.pop(node_id)
        if ip is not None:
            ids = self._by_ip[ip]
            ids.discard(node_id)
            if not ids:
                del self._by_ip[ip]
            for members in self._networks.values():
                members.discard(node_id)
        _discard(self._by_role, node.role, node_id)
        for tag in node.tags:
            _discard(self._by_tag, tag, node_id)
        _discard(self._by_user, node.user, node_id)
        self._tagged.discard(node_id)
        self._untagged.discard(node_id)

    def same_user(self, node: NodeFacts) -> Set[int]:
        """`autogroup:self` seen from `node`: the untagged nodes of its user, if it is untagged."""
        return _EMPTY if node.tags else self._by_user.get(node.user, _EMPTY)

    def members(self, alias: Alias) -> Set[int]:
        """The ids matching a (non-relative) alias. Read-only view: callers must not mutate."""
        kind = alias.kind
        if kind == "all":
            return self.nodes.keys()
        if kind == "user":
            return self._by_user.get(alias.name, _EMPTY)
        if kind == "tag":
            return self._by_tag.get(alias.name, _EMPTY)
        if kind == "role":
            return self._by_role.get(alias.name, _EMPTY)
        if kind == "member":
            return self._untagged
        if kind == "tagged":
            return self._tagged
        if kind == "group":
            return self._users(alias.members)
        if kind == "admins":
            return self._users(self.admins)
        if kind == "prefix":
            assert alias.network is not None
            return self._in_network(alias.network)
        raise ValueError(f"{alias.text} is relative to a node; use same_user()")

    def _users(self, users: Iterable[str]) -> Set[int]:
        found = [self._by_user[u] for u in users if u in self._by_user]
        if len(found) == 1:
            return found[0]
        return set().union(*found)

    def _in_network(self, net: IPNetwork) -> Set[int]:
        if net.num_addresses == 1:
            return self._by_ip.get(net.network_address, _EMPTY)
        tracked = self._networks.get(net)
        return tracked if tracked is not None else self._scan(net)

    def contains(self, alias: Alias, node: NodeFacts) -> bool:
        """Whether `node` matches a (non-relative) alias, in O(1)."""
        kind = alias.kind
        if kind == "all":
            return True
        if kind == "tag":
            return alias.name in node.tags
        if kind == "role":
            return node.role == alias.name
        if kind == "tagged":
            return bool(node.tags)
        if node.tags and kind in ("user", "group", "member", "admins", "self"):
            return False  # tagged nodes are owned by their tags
        if kind == "member":
            return True
        if kind == "user":
            return node.user == alias.name
        if kind == "group":
            return node.user in alias.members
        if kind == "admins":
            return node.user in self.admins
        if kind == "prefix":
            ip = self._ip.get(node.id)
            return ip is not None and alias.network is not None and ip in alias.network
        raise ValueError(f"{alias.text} is relative to a node")
