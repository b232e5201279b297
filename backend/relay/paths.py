"""Which peers go through the relay (pure: time, the netmap's peers and WireGuard's stats are
passed in).

Relay first, direct when it works (what Tailscale does with DERP): a peer without a direct
handshake DIRECT_TRY_S after we first sent to it is relayed (at once where this host's UDP
is blocked), so a pair with no direct path talks within seconds of login instead of after every
candidate had its turns. A direct path, where one exists, answers the first handshake within a
round trip (the lab's direct pairs ping ~0.5 s after login), so the short try keeps them direct.
An unanswered initiation is repeated after RETRY_S (WireGuard would wait 5 s): the first often
reaches a peer that does not know us yet, since peers learn of a node that just logged in a
moment after it learns of them.
Of a pair, the side with the greater public key waits FOLLOW_S longer: the other one's
handshake through the relay reaches it first and WireGuard roams to the relay by itself. When
both switched at once, each set its peer afresh (backend/wg/diff.py) and one could drop the
session the other had just completed: no packet passed until WireGuard's 15 s re-handshake.

Direct is still tried in the background, and the pair goes back to direct when WireGuard
shakes hands on a direct address (the peer reached us directly: roaming), when the peer's
candidates change (a new address to try, e.g. a NAT mapping that changed), or when a probe
succeeds: PROBE_FIRST_S after the switch and then every PROBE_EVERY_S, once we send (a probe
judges by the answers to our packets), the next of the peer's candidates (best first, as
`endpoints.rank` orders them) is its endpoint for up to PROBE_WINDOW_S. WireGuard's session
survives the switch (it roams), so a probe needs no handshake: if packets arrive while the
endpoint stays direct (WireGuard roams to wherever the peer's latest packet came from), the pair
stays direct. The first probe comes early, while the far NAT still holds the mapping its own
direct try opened (Linux keeps an unanswered UDP flow for 30 s): a hole-punchable pair that
lost its first handshake gets direct then. A failed probe costs what we sent in that second
(it ends at the first second with packets sent and none received).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime

from pcloud.backend.wg.driver import PeerStats
from pcloud.server.protocol import Peer

# A path is alive while packets arrive: the peer's keepalive (every 25 s) at the least.
ALIVE_S = 35.0
# Without a direct handshake this long after we first sent to the peer, the relay: one round
# trip answers a direct handshake where a path exists, the rest is margin for a loaded host.
DIRECT_TRY_S = 2.0
FOLLOW_S = 1.0  # the greater key of a pair waits this much longer (its peer leads the switch)

# Without a handshake this long after a try, initiate again (the peer set afresh): WireGuard
# itself waits 5 s, and a first initiation that reached a peer which did not know us yet (it
# learns of a node that just logged in a moment later) would cost the direct path.
RETRY_S = 1.0
# At most this many per direct try: each one drops a handshake still on its way, so a peer more
# than a second away (or one no relay can replace) gets WireGuard's own 5 s rhythm after them.
MAX_RETRIES = 2
PROBE_FIRST_S = 3.0  # after this long on the relay, try direct once more
PROBE_EVERY_S = 60.0  # and again this often
PROBE_WINDOW_S = 2.0  # a probe lasts at most this long (what we send meanwhile may be lost)
UNCOUNTED = -1


class RelayPaths:
    def __init__(self, me: str = "", direct_try: float = DIRECT_TRY_S) -> None:
        self.me = me  # our public key (base64): who of a pair leads the switch
        self.direct_try = direct_try
        self.relayed: set[str] = set()
        self._waiting: dict[str, float] = {}  # key -> since when without a direct handshake
        self._cands: dict[str, tuple[str, ...]] = {}
        self._next_probe: dict[str, float] = {}
        self._probes: dict[str, int] = {}  # key -> probes made (the next candidate to try)
        # key -> (since, rx, tx when WireGuard had the direct endpoint; UNCOUNTED before that)
        self._probing: dict[str, tuple[float, int, int]] = {}
        self._rx: dict[str, tuple[int, float]] = {}  # key -> (rx_bytes, when it last grew)
        self._tx: dict[str, int] = {}  # key -> tx_bytes at the last update
        # The endpoint a probe tries (a candidate, best first).
        self.trying: dict[str, str] = {}
        # Where WireGuard roamed to when a relayed peer reached us directly: configured as the
        # endpoint from then on (the selector's candidate of the moment may be a dead one).
        self.roamed: dict[str, str] = {}
        # key -> handshake tries made while waiting for a direct handshake (`PeerConfig.
        # handshake_try`: only ever raised while the peer is in the netmap).
        self.tries: dict[str, int] = {}
        # key -> (when this wait's latest (re)try began, rx_bytes then, retries made)
        self._tried: dict[str, tuple[float, int, int]] = {}

    def update(
        self,
        peers: Sequence[Peer],
        stats: Iterable[PeerStats],
        proxies: Mapping[str, str],
        now: float,
        wall_now: datetime,
        relay_up: bool,
        udp_blocked: bool = False,
        ranked: Callable[[str], Sequence[str]] = lambda key: (),
    ) -> bool:
        """Fold in the peers, WireGuard's stats and our proxy endpoints (key -> 127.0.0.1:PORT);
        True when the set of relayed peers or a handshake try changed. `udp_blocked`: this
        host's UDP does not get out (no relay or echo answers it), so direct is not waited for;
        `ranked(key)`: the peer's candidates best first (the endpoint selector's order), for
        the probes."""
        by_key = {s.public_key: s for s in stats}
        before = set(self.relayed), dict(self.tries)
        keys = set()
        for peer in peers:
            key = peer.public_key
            keys.add(key)
            cands = tuple(sorted(peer.endpoints))
            if self._cands.get(key, cands) != cands:
                # New candidates (e.g. the peer's first report or a new NAT mapping): direct
                # gets a go again; a relayed peer probes them at once.
                was_relayed = key in self.relayed
                self._forget(key)  # the direct try's clock starts again at our next send
                if was_relayed:
                    self._probing[key] = (now, UNCOUNTED, UNCOUNTED)
            self._cands[key] = cands
            wait = 0.0 if udp_blocked else self.direct_try
            if self.me and key < self.me:
                wait += FOLLOW_S  # the peer leads: its relayed handshake brings us along
            s = by_key.get(key)
            # Anything sent since the last look (a first look counts what WireGuard sent so
            # far: its first handshake initiation, and the next comes only 5 s later).
            sending = s is not None and s.tx_bytes > self._tx.get(key, 0)
            self._tx[key] = s.tx_bytes if s else 0
            self._step(key, s, proxies.get(key), now, wall_now, relay_up, wait, sending)
            order = [c for c in ranked(key) if c in cands] or list(cands)
            self._maybe_probe(key, order, s, now, sending)
        for key in set(self._cands) - keys:
            self._cands.pop(key, None)
            self._rx.pop(key, None)
            self._tx.pop(key, None)
            self.tries.pop(key, None)
            self._forget(key)
        return (self.relayed, self.tries) != before

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
        self.trying.pop(key, None)
        self._waiting.pop(key, None)
        self._tried.pop(key, None)
        self._probing.pop(key, None)
        self._next_probe.pop(key, None)
        self._probes.pop(key, None)

    def _step(
        self,
        key: str,
        s: PeerStats | None,
        proxy: str | None,
        now: float,
        wall_now: datetime,
        relay_up: bool,
        wait: float,
        sending: bool,
    ) -> None:
        fresh = self._alive(key, s, now, wall_now)
        via_proxy = s is not None and s.endpoint is not None and s.endpoint == proxy
        if key in self._probing:
            self._judge_probe(key, s, now, via_proxy)
        elif fresh and via_proxy:
            self.relayed.add(key)  # handshakes come through the relay (maybe its doing)
            self.roamed.pop(key, None)
            self._waiting.pop(key, None)
            self._tried.pop(key, None)
            self._next_probe.setdefault(key, now + PROBE_FIRST_S)
        elif fresh and s is not None and s.endpoint:
            if key in self.relayed:  # the peer reached us directly: direct it is
                self.relayed.discard(key)
                self.roamed[key] = s.endpoint
            self._waiting.pop(key, None)
            self._tried.pop(key, None)
        elif key not in self.relayed and (sending or key in self._waiting):
            # The try's clock runs from our first send without a handshake: a peer we send
            # nothing to is no reason to leave a direct path (idle LAN pairs would all be
            # relayed after login, and lose packets to the probe that brings them back).
            self.roamed.pop(key, None)
            since = self._waiting.setdefault(key, now)
            if relay_up and now - since >= wait:
                self.relayed.add(key)
                self._next_probe[key] = now + PROBE_FIRST_S
            else:
                self._retry(key, s, now, since)

    def _retry(self, key: str, s: PeerStats | None, now: float, since: float) -> None:
        """Initiate again after RETRY_S without a handshake, unless something arrived from the
        peer meanwhile: as the responder WireGuard counts a handshake only once the peer's
        first data packet is in, and setting the peer afresh would drop that session."""
        rx = s.rx_bytes if s is not None else 0
        when, rx_then, made = self._tried.setdefault(key, (since, rx, 0))
        if rx != rx_then:
            self._tried[key] = (now, rx, made)  # a handshake on its way: give it a second
        elif now - when >= RETRY_S and made < MAX_RETRIES:
            self._tried[key] = (now, rx, made + 1)
            self.tries[key] = self.tries.get(key, 0) + 1

    def _judge_probe(self, key: str, s: PeerStats | None, now: float, via_proxy: bool) -> None:
        """A direct try while relayed: WireGuard roams to where the peer's latest packet came
        from, so packets received with the endpoint still direct came directly."""
        since, rx, tx = self._probing[key]
        if now <= since:
            return  # started in this update: WireGuard gets the direct endpoint after it
        if rx == UNCOUNTED and not via_proxy:
            # The counters are taken once WireGuard has the direct endpoint: what arrived
            # while the relay's proxy was still its endpoint (a reply racing the switch) must
            # not pass for a direct answer and keep the pair on a dead address.
            self._probing[key] = (since, s.rx_bytes if s else 0, s.tx_bytes if s else 0)
            return
        got = s is not None and s.rx_bytes > rx and bool(s.endpoint) and not via_proxy
        sent_unanswered = s is not None and s.tx_bytes > tx and now - since >= 1.0
        back = via_proxy  # the peer's packets came through the relay: it did not answer
        if got or back or sent_unanswered or now - since >= PROBE_WINDOW_S:
            del self._probing[key]
            self.trying.pop(key, None)
            if got and s is not None and s.endpoint:
                self.roamed[key] = s.endpoint
                self._probes.pop(key, None)
            else:
                self.relayed.add(key)
                self._next_probe[key] = now + PROBE_EVERY_S

    def _maybe_probe(
        self, key: str, order: Sequence[str], s: PeerStats | None, now: float, sending: bool
    ) -> None:
        """Start a probe when one is due and we send (a probe without traffic cannot tell)."""
        if key not in self.relayed or not order or now < self._next_probe.get(key, now):
            return
        if not sending:
            return
        n = self._probes.get(key, 0)
        self._probes[key] = n + 1
        self.relayed.discard(key)
        self.trying[key] = order[n % len(order)]
        self._probing[key] = (now, UNCOUNTED, UNCOUNTED)
