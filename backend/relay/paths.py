"""Which peers go through the relay (pure: time, the netmap's peers and WireGuard's stats are
passed in).

A peer is relayed once every direct candidate had its turn (`try_for` each, as
`endpoints.EndpointSelector` gives them) without a fresh handshake and a relay is up; it stays
relayed while the handshakes come through the relay. It goes back to direct when WireGuard shakes
hands on a direct address (the peer reached us directly: roaming) or when the peer's candidates
change (a new address to try, e.g. a NAT mapping that changed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from pcloud.backend.wg.driver import PeerStats
from pcloud.server.protocol import Peer

FRESH_S = 180  # WireGuard rekeys every 2 minutes while traffic or keepalives flow
MAX_WAIT_S = 15.0  # relay after at most this long, however many candidates there are


class RelayPaths:
    def __init__(self, try_for: float) -> None:
        self.try_for = try_for
        self.relayed: set[str] = set()
        self._waiting: dict[str, float] = {}  # key -> since when without a direct handshake
        self._cands: dict[str, tuple[str, ...]] = {}

    def update(
        self,
        peers: Sequence[Peer],
        stats: Iterable[PeerStats],
        proxies: Mapping[str, str],
        now: float,
        wall_now: datetime,
        relay_up: bool,
    ) -> bool:
        """Fold in the peers, WireGuard's stats and our proxy endpoints (key -> 127.0.0.1:PORT);
        True when the set of relayed peers changed."""
        by_key = {s.public_key: s for s in stats}
        before = set(self.relayed)
        keys = set()
        for peer in peers:
            key = peer.public_key
            keys.add(key)
            cands = tuple(sorted(peer.endpoints))
            if self._cands.get(key, cands) != cands:
                # New candidates: direct gets another go.
                self.relayed.discard(key)
                self._waiting[key] = now
            self._cands[key] = cands
            s = by_key.get(key)
            fresh = bool(
                s and s.last_handshake and (wall_now - s.last_handshake).total_seconds() < FRESH_S
            )
            via_proxy = s is not None and s.endpoint is not None and s.endpoint == proxies.get(key)
            if fresh and via_proxy:
                self.relayed.add(key)  # handshakes come through the relay (maybe its doing)
                self._waiting.pop(key, None)
            elif fresh and s is not None and s.endpoint:
                self.relayed.discard(key)  # a direct handshake: direct it is
                self._waiting.pop(key, None)
            elif key not in self.relayed:
                since = self._waiting.setdefault(key, now)
                wait = min(MAX_WAIT_S, self.try_for * max(1, len(cands)))
                if relay_up and now - since >= wait:
                    self.relayed.add(key)
        for key in set(self._cands) - keys:
            self._cands.pop(key, None)
            self._waiting.pop(key, None)
            self.relayed.discard(key)
        return self.relayed != before
