"""Pure netmap bookkeeping: merge a long-poll answer into the held netmap, vet it, derive the
WireGuard config from it.

The server answers `GET /netmap` with either a full map or a delta (`peers_changed`,
`peers_removed`). `apply_netmap` folds either into one full map (what we persist and show),
`vet_netmap` drops the peers whose fields are unsafe to configure (the netmap is hostile input:
another node's data relayed by the server), and `desired_config` turns that map into the whole
`InterfaceConfig` the driver should reach.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from pcloud.backend.wg.diff import normalize_endpoint
from pcloud.backend.wg.driver import DriverError, InterfaceConfig, PeerConfig
from pcloud.server.protocol import MAX_ENDPOINTS, Netmap, Peer, check_hostname, check_public_key

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
        domain=answer.domain or held.domain,
        # A delta carries the filter only when it changed.
        filter=answer.filter if answer.filter is not None else held.filter,
    )


class NetmapError(ValueError):
    """The netmap's own entry (`self`) is unusable, so nothing of it can be applied."""


def _peer_problem(peer: Peer, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str | None:
    """What is unsafe about one peer's fields, or None. The checks repeat the server's input
    rules where a bad value would reach WireGuard or the routing table."""
    try:
        check_public_key(peer.public_key)
        check_hostname(peer.hostname)
    except ValueError as exc:
        return str(exc)
    try:
        addr = ipaddress.ip_address(peer.address)
    except ValueError:
        return f"address {peer.address[:60]!r} is not an IP address"
    # Its /32 becomes a route into the tunnel: outside the network it would capture traffic to
    # that host (a LAN gateway, the coordination server...).
    if addr not in network or addr in (network.network_address, network.broadcast_address):
        return f"address {addr} is not a host address of the network {network}"
    if len(peer.endpoints) > MAX_ENDPOINTS:
        return f"lists {len(peer.endpoints)} endpoints (at most {MAX_ENDPOINTS})"
    for endpoint in peer.endpoints:
        try:
            normalize_endpoint(endpoint)
        except DriverError as exc:
            return str(exc)
    return None


def vet_netmap(netmap: Netmap, network: str) -> tuple[Netmap, list[str]]:
    """`netmap` with only the peers that are safe to configure (public keys in their canonical
    spelling), and one line per peer left out, naming it and why.

    A peer is left out for a bad field, for the key bytes of an earlier peer or of this device
    (WireGuard would refuse the whole config), or for an address an earlier peer or this
    device holds (WireGuard would move that address's traffic to the later peer). Earlier means
    a lower node id: the node that registered first keeps its place. Raises NetmapError when
    this device's own entry is unusable.
    """
    net = ipaddress.ip_network(network, strict=False)
    try:
        own_key = check_public_key(netmap.self.public_key)
        own_addr = ipaddress.ip_address(netmap.self.address)
    except ValueError as exc:
        raise NetmapError(f"the netmap's entry for this device is unusable: {exc}") from None
    if own_addr not in net:
        raise NetmapError(f"this device's address {own_addr} is outside the network {net}")
    keys: dict[str, str] = {own_key: "this device"}
    addrs: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {own_addr: "this device"}
    good: list[Peer] = []
    skipped: list[str] = []
    for peer in sorted(netmap.peers, key=lambda p: p.node_id):
        if peer.node_id == netmap.self.node_id:
            continue  # ourselves: never a peer (WireGuard refuses its own key)
        name = f"peer {peer.node_id} ({peer.hostname[:63]!r})"
        problem = _peer_problem(peer, net)
        if problem is None:
            key = check_public_key(peer.public_key)
            addr = ipaddress.ip_address(peer.address)
            if key in keys:
                problem = f"has the same public key as {keys[key]}"
            elif addr in addrs:
                problem = f"claims address {addr}, which {addrs[addr]} has"
        if problem is not None:
            skipped.append(f"{name}: {problem}")
            continue
        keys[key] = addrs[addr] = name
        good.append(peer if peer.public_key == key else peer.model_copy(update={"public_key": key}))
    if good == netmap.peers:
        return netmap, skipped
    return netmap.model_copy(update={"peers": good}), skipped


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
    tries: Mapping[str, int] | None = None,
) -> InterfaceConfig:
    """The whole interface config for `netmap`. `endpoints` maps a peer's public key to the
    candidate currently chosen (see `endpoints.EndpointSelector`); without a choice, a peer's
    first endpoint is used. `tries`: a peer's handshake try (`PeerConfig.handshake_try`)."""
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
                handshake_try=(tries or {}).get(peer.public_key, 0),
            )
        )
    return InterfaceConfig(
        private_key=private_key,
        address=interface_address(netmap.self.address, network),
        listen_port=listen_port,
        peers=tuple(peers),
    )
