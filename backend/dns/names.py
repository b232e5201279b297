"""The netmap as a name table: `HOST.<domain>.` -> overlay address, and the reverse (PTR) names.

Built once per netmap change (O(peers)) and swapped whole, so every query is one dict lookup and
a 10,000-peer netmap costs the resolver nothing per answer. Keys are lower-case, absolute (with
the trailing dot) as they come out of a parsed question.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pcloud.server.protocol import DEFAULT_DOMAIN, Netmap, Peer, dns_label


def peer_dns_name(peer: Peer, domain: str) -> str:
    """The peer's name without the trailing dot, as the server gave it or (older servers)
    derived with the same normalisation the server uses.

    The netmap is hostile input: a given name counts only as one DNS label under the network's
    domain, so no netmap can make this resolver answer for a name outside its zone.
    """
    given = peer.dns_name.lower()
    label, _, rest = given.partition(".")
    if given and rest == domain and dns_label(label) == label:
        return given
    return f"{dns_label(peer.hostname)}.{domain}"


@dataclass(frozen=True)
class NameTable:
    domain: str = DEFAULT_DOMAIN
    addresses: dict[str, str] = field(default_factory=dict)  # "rpi112.pcloud.internal." -> ip
    reverse: dict[str, str] = field(default_factory=dict)  # "2.0.0.10.in-addr.arpa." -> name.

    @property
    def zone(self) -> str:
        """The domain as an absolute lower-case name: `pcloud.internal.`"""
        return self.domain + "."

    def in_zone(self, qname: str) -> bool:
        return qname == self.zone or qname.endswith("." + self.zone)


def build_table(netmap: Netmap) -> NameTable:
    """Every peer the netmap shows (the policy already left out the hidden ones) plus ourselves.

    Should two peers ever carry one name (a store written before names were unique), the lower
    node id wins, so the answer never flips between restarts.
    """
    domain = netmap.domain or DEFAULT_DOMAIN
    addresses: dict[str, str] = {}
    reverse: dict[str, str] = {}
    for peer in sorted([netmap.self, *netmap.peers], key=lambda p: p.node_id):
        name = peer_dns_name(peer, domain).lower() + "."
        if name in addresses:
            continue
        address = peer.address
        if ":" not in address:
            # IPv4, the common case: 10x cheaper than ipaddress for a 10,000-peer netmap.
            pointer = ".".join(reversed(address.split("."))) + ".in-addr.arpa."
        else:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                continue
            address, pointer = str(ip), ip.reverse_pointer + "."
        addresses[name] = address
        reverse.setdefault(pointer, name)
    return NameTable(domain, addresses, reverse)
