"""Which peers go through the relay (pure: time, the netmap's peers and WireGuard's stats are
passed in).

Relay first, direct when it works (what Tailscale does with DERP): a peer without a direct
handshake DIRECT_TRY_S after its candidates arrived is relayed (at once when this host's UDP is
blocked), so a pair with no direct path talks within seconds of login instead of after every
candidate had its turns. A direct path, where one exists, answers the first handshake within a
round trip (the lab's direct pairs ping ~0.5 s after login), so the short try keeps them direct.

Direct is still tried in the background: the endpoint selector keeps rotating a relayed peer's
candidates, and the pair goes back to direct when WireGuard shakes hands on a direct address
(the peer reached us directly: roaming), when the peer's candidates change (a new address to
try, e.g. a NAT mapping that changed), or when a probe succeeds: after PROBE_FIRST_S and then
every PROBE_EVERY_S, the peer's direct candidate is its endpoint for up to PROBE_WINDOW_S, and
if packets arrive while WireGuard's endpoint stays direct (it roams to wherever the peer's
latest packet came from) the pair stays direct. The first probe comes early, while the far
NAT still holds the mapping its own direct try opened (Linux keeps an unanswered UDP flow for
30 s), so a hole-punchable pair that lost its first handshake (a loaded host) gets direct then.
A failed probe costs what we sent in that second or two (it ends at the first second with
packets sent and none received); with no traffic at all a probe cannot tell and the relay stays.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from pcloud.backend.wg.driver import PeerStats
from pcloud.server.protocol import Peer

# A path is alive while packets arrive: the peer's keepalive (every 25 s) at the least.
ALIVE_S = 35.0
# Without a direct handshake this long after the candidates arrived, the relay: one round trip
# answers a direct handshake where a path exists, the rest is margin for a loaded host.
DIRECT_TRY_S = 2.0

PROBE_FIRST_S = 4.0  # after this long on the relay, try direct once more
PROBE_EVERY_S = 60.0  # and again this often
PROBE_WINDOW_S = 2.0  # a probe lasts at most this long (what we send meanwhile may be lost)


class RelayPaths:
    def __init__(self, direct_try: float = DIRECT_TRY_S) -> None:
        self.direct_try = direct_try
        self.relayed: set[str] = set()
        self._waiting: dict[str, float] = {}  # key -> since when without a direct handshake
        self._cands: dict[str, tuple[str, ...]] = {}
        self._next_probe: dict[str, float] = {}
        self._probing: dict[str, tuple[float, int, int]] = {}  # key -> (since, rx, tx then)
        self._rx: dict[str, tuple[int, float]] = {}  # key -> (rx_bytes, when it last grew)
        # Where WireGuard roamed to when a relayed peer reached us directly: configured as the
        # endpoint from then on (the selector's candidate of the moment may be a dead one).
        self.roamed: dict[str, str] = {}

    def update(
        self,
        peers: Sequence[Peer],
        stats: Iterable[PeerStats],
        proxies: Mapping[str, str],
        now: float,
        wall_now: datetime,
        relay_up: bool,
        udp_blocked: bool = False,
    ) -> bool:
        """Fold in the peers, WireGuard's stats and our proxy endpoints (key -> 127.0.0.1:PORT);
        True when the set of relayed peers changed. `udp_blocked`: this host's UDP does not get
        out (no relay or echo answers it), so direct is not waited for."""
        by_key = {s.public_key: s for s in stats}
        before = set(self.relayed)
        keys = set()
        for peer in peers:
            key = peer.public_key
            keys.add(key)
            cands = tuple(sorted(peer.endpoints))
            if self._cands.get(key, cands) != cands:
                # New candidates (e.g. the peer's first report or a new NAT mapping): direct
                # gets a full go again; a relayed peer probes them at once.
                was_relayed = key in self.relayed
                self._forget(key)
                self._waiting[key] = now
                if was_relayed:
                    s = by_key.get(key)
                    self._probing[key] = (now, s.rx_bytes if s else 0, s.tx_bytes if s else 0)
            self._cands[key] = cands
            wait = 0.0 if udp_blocked else self.direct_try
            self._step(key, cands, by_key.get(key), proxies.get(key), now, wall_now, relay_up, wait)
        for key in set(self._cands) - keys:
            self._cands.pop(key, None)
            self._rx.pop(key, None)
            self._forget(key)
        return self.relayed != before

    def _alive(self, key: str, s: PeerStats | None, now: float, wall_now: datetime) -> bool:
        """A handshake happened and packets still arrive (a handshake alone stays "recent" for
        minutes on an endpoint that died)."""
        if s is None or s.last_handshake is None:
            return False
        seen = self._rx.get(key)
        if seen is None or s.rx_bytes != seen[0]:
            self._rx[key] = (s.rx_bytes, now)
            return True
        return now - seen[1] < ALIVE_S or (wall_now - s.last_handshake).total_seconds() < ALIVE_S

    def _forget(self, key: str) -> None:
        self.relayed.discard(key)
        self.roamed.pop(key, None)
        self._waiting.pop(key, None)
        self._probing.pop(key, None)
        self._next_probe.pop(key, None)

    def _step(
        self,
        key: str,
        cands: tuple[str, ...],
        s: PeerStats | None,
        proxy: str | None,
        now: float,
        wall_now: datetime,
        relay_up: bool,
        wait: float,
    ) -> None:
        fresh = self._alive(key, s, now, wall_now)
        via_proxy = s is not None and s.endpoint is not None and s.endpoint == proxy
        if key in self._probing:
            # A direct try while relayed: WireGuard roams to where the peer's latest packet came
            # from, so packets received with the endpoint still direct came directly.
            since, rx, tx = self._probing[key]
            got = s is not None and s.rx_bytes > rx and bool(s.endpoint) and not via_proxy
            sent_unanswered = s is not None and s.tx_bytes > tx and now - since >= 1.0
            # (In the tick that starts a probe WireGuard still shows the proxy: not an answer.)
            back = via_proxy and now > since
            if got or back or sent_unanswered or now - since >= PROBE_WINDOW_S:
                del self._probing[key]
                if got and s is not None and s.endpoint:
                    self.roamed[key] = s.endpoint
                else:
                    self.relayed.add(key)
                    self._next_probe[key] = now + PROBE_EVERY_S
            return
        if fresh and via_proxy:
            self.relayed.add(key)  # handshakes come through the relay (maybe its doing)
            self.roamed.pop(key, None)
            self._waiting.pop(key, None)
            self._next_probe.setdefault(key, now + PROBE_FIRST_S)
        elif fresh and s is not None and s.endpoint:
            if key in self.relayed:  # the peer reached us directly: direct it is
                self.relayed.discard(key)
                self.roamed[key] = s.endpoint
            self._waiting.pop(key, None)
        elif key not in self.relayed:
            self.roamed.pop(key, None)
            since = self._waiting.setdefault(key, now)
            if relay_up and now - since >= wait:
                self.relayed.add(key)
                self._next_probe[key] = now + PROBE_FIRST_S
        if key in self.relayed and cands and now >= self._next_probe.get(key, now):
            self.relayed.discard(key)
            self._probing[key] = (now, s.rx_bytes if s else 0, s.tx_bytes if s else 0)
