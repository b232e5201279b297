"""The built-in rule: server-role nodes always reach each other on what the network itself needs.

K3s (supervisor/apiserver 6443, kubelet 10250, its embedded etcd 2379-2380, flannel VXLAN 8472/udp
and flannel-wireguard 51820-51821/udp), our own etcd members (2479-2480, see
`shared/etcd/member.py`) and the coordination server (8443) run between server-role nodes
over the overlay. A policy document replaces the default rules, so without this rule any document
that forgets `role:server` would cut the cluster apart (K3s nodes NotReady). These rules are added
to every policy, default or document, by `PeerIndex`; the dry run lists them as built in.
"""

from __future__ import annotations

from .aliases import Alias, DstEntry, Ports, Rule

SERVER_TCP_PORTS: Ports = ((2379, 2380), (2479, 2480), (6443, 6443), (8443, 8443), (10250, 10250))
SERVER_UDP_PORTS: Ports = ((8472, 8472), (51820, 51821))
# What each port is for, for messages ("tcp 6443 (K3s API)").
PORT_NAMES: dict[tuple[int, int], str] = {
    (6, 2379): "K3s etcd",
    (6, 2380): "K3s etcd",
    (6, 2479): "PCloud etcd",
    (6, 2480): "PCloud etcd",
    (6, 6443): "K3s API",
    (6, 8443): "coordination",
    (6, 10250): "kubelet",
    (17, 8472): "flannel VXLAN",
    (17, 51820): "flannel WireGuard",
    (17, 51821): "flannel WireGuard",
}

_SERVERS = Alias("role", "role:server", name="server")
WHERE = "built-in: servers reach each other"


def _rule(proto: int, ports: Ports, text: str) -> Rule:
    return Rule((_SERVERS,), (DstEntry(_SERVERS, ports, text),), proto, WHERE)


BUILTIN_RULES: tuple[Rule, ...] = (
    _rule(6, SERVER_TCP_PORTS, "role:server:2379-2380,2479-2480,6443,8443,10250"),
    _rule(17, SERVER_UDP_PORTS, "role:server:8472,51820-51821"),
    _rule(1, ((0, 65535),), "role:server:*"),
)


def describe() -> list[str]:
    """The built-in rules in policy words (for the dry run)."""
    return [
        "role:server -> role:server tcp 2379-2380 (K3s etcd), 2479-2480 (PCloud etcd), "
        "6443 (K3s API), 8443 (coordination), 10250 (kubelet)",
        "role:server -> role:server udp 8472 (flannel VXLAN), 51820-51821 (flannel WireGuard)",
        "role:server -> role:server icmp",
    ]
