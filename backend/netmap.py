"""Pure netmap bookkeeping: merge a long-poll answer into the held netmap, derive the WireGuard
config from it.

The server answers `GET /netmap` with either a full map or a delta (`peers_changed`,
`peers_removed`). `apply_netmap` folds either into one full map (what we persist and show), and
`desired_config` turns that map into the whole `InterfaceConfig` the driver should reach.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from pcloud.backend.wg.driver import InterfaceConfig, PeerConfig
from pcloud.server.protocol import Netmap

KEEPALIVE_S = 25  # keeps NAT mappings open; WireGuard's recommended value


def apply_netmap(held: Netmap | None, answer: Netmap) -> Netmap:
    """The full netmap after `answer`. A full answer replaces; a delta needs a held map."""
    if answer.full or held is None:
        if not answer.full:
            raise ValueError("a netmap delta arrived before any full netmap")
        peers = sorted(answer.peers, key=lambda p: p.node_id)
        return answer.model_copy(update={"peers": peers, "peers_changed": [], "peers_removed": []})
    by_id = {p.node_id: p for p in held.peers}
    for node_id in answer.peers_removed:
        by_id.pop(node_id, None)
    for peer in answer.peers_changed:
        by_id[peer.node_id] = peer
    return Netmap(
        version=answer.version,
        full=True,
        self=answer.self,
        peers=sorted(by_id.values(), key=lambda p: p.node_id),
        servers=answer.servers or held.servers,
    )


def servers_changed(held: Netmap, answer: Netmap) -> bool:
    """`answer` lists other coordination servers than `held` (the order is each answering
    server's own, itself first, so it is not a change). An empty list means "not told"."""
    return bool(answer.servers) and set(answer.servers) != set(held.servers)


def interface_address(address: str, network: str) -> str:
    """`10.0.0.2` in `10.0.0.0/24` -> `10.0.0.2/24`."""
    prefix = ipaddress.ip_network(network, strict=False).prefixlen
    return f"{address}/{prefix}"


def desired_config(
    netmap: Netmap,
    *,
    private_key: str,
    network: str,
    listen_port: int | None = None,
    endpoints: Mapping[str, str | None] | None = None,
) -> InterfaceConfig:
    """The whole interface config for `netmap`. `endpoints` maps a peer's public key to the
    candidate currently chosen (see `endpoints.EndpointSelector`); without a choice, a peer's
    first endpoint is used."""
    chosen = endpoints or {}
    peers = []
    for peer in netmap.peers:
        if peer.public_key == netmap.self.public_key:
            continue  # never our own key as a peer (WireGuard refuses it)
        endpoint = chosen.get(peer.public_key)
        if endpoint is None and peer.endpoints:
            endpoint = peer.endpoints[0]
        host = ipaddress.ip_address(peer.address)
        peers.append(
            PeerConfig(
                public_key=peer.public_key,
                allowed_ips=(f"{host}/{host.max_prefixlen}",),
                endpoint=endpoint,
                persistent_keepalive=KEEPALIVE_S,
            )
        )
    return InterfaceConfig(
        private_key=private_key,
        address=interface_address(netmap.self.address, network),
        listen_port=listen_port,
        peers=tuple(peers),
    )
