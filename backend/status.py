"""Builds the local API's `Status` from the netmap and WireGuard's per-peer stats (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pcloud.backend.dns.names import peer_dns_name
from pcloud.backend.filter.enforcer import PacketFilter
from pcloud.backend.localapi.schemas import FilterDetail, FilterStatus, PeerStatus, Status
from pcloud.backend.state import State
from pcloud.backend.wg.driver import PeerStats
from pcloud.server.protocol import DEFAULT_DOMAIN, Netmap, Peer


def build_status(
    state: State,
    netmap: Netmap | None,
    stats: Iterable[PeerStats],
    *,
    server_url: str | None,
    error: str | None,
    unreachable_since: datetime | None = None,
    packet_filter: PacketFilter | None = None,
    relayed: Mapping[str, str] | None = None,
    nat: str | None = None,
) -> Status:
    """`relayed` maps a relay proxy endpoint (127.0.0.1:PORT) to the path it stands for."""
    by_key = {s.public_key: s for s in stats}
    domain = (netmap.domain if netmap else "") or DEFAULT_DOMAIN

    def named(peer: Peer) -> dict[str, Any]:
        # A server that predates names sends none: show the name our resolver answers anyway.
        return {**peer.model_dump(), "dns_name": peer_dns_name(peer, domain)}

    peers = []
    for peer in netmap.peers if netmap else []:
        s = by_key.get(peer.public_key)
        peers.append(
            PeerStatus(
                **named(peer),
                endpoint=s.endpoint if s else None,
                last_handshake=s.last_handshake if s else None,
                rx_bytes=s.rx_bytes if s else 0,
                tx_bytes=s.tx_bytes if s else 0,
                path=peer_path(peer, s, datetime.now(UTC), relayed or {}),
            )
        )
    return Status(
        state=state.value,
        self=Peer.model_validate(named(netmap.self)) if netmap else None,
        server_url=server_url,
        peers=peers,
        error=error,
        control_unreachable_since=unreachable_since,
        filter=filter_status(packet_filter) if packet_filter else FilterStatus(),
        nat=nat,
    )


def filter_status(pf: PacketFilter, *, detail: bool = False) -> FilterDetail:
    return FilterDetail(
        state=pf.state,
        rules=len(pf.rules),
        nft_rules=pf.nft_rules,
        reason=pf.reason,
        detail=list(pf.rules) if detail else [],
    )


PATH_FRESH_S = 180  # WireGuard rekeys every 2 minutes while traffic (or a keepalive) flows


def peer_path(
    peer: Peer, stats: PeerStats | None, now: datetime, relayed: Mapping[str, str] | None = None
) -> str:
    """`direct IP:PORT` (or `relay NAME` when the endpoint is a relay proxy) when WireGuard
    shook hands on that endpoint lately, else why not."""
    if stats is not None and stats.last_handshake is not None and stats.endpoint:
        if (now - stats.last_handshake).total_seconds() < PATH_FRESH_S:
            via = (relayed or {}).get(stats.endpoint)
            return via or f"direct {stats.endpoint}"
    if not peer.endpoints:
        return "no path (the peer reported no endpoint)"
    if not peer.online:
        return "no path (the peer is offline)"
    tried = ", ".join(peer.endpoints)
    return f"no path (no handshake on {tried})"
