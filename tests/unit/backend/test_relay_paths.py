"""Who goes through the relay (backend.relay.paths, pure): time and WireGuard's stats passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pcloud.backend.relay.paths import (
    DIRECT_TRY_S,
    FOLLOW_S,
    MAX_RETRIES,
    PROBE_EVERY_S,
    PROBE_FIRST_S,
    RETRY_S,
    RelayPaths,
)
from pcloud.backend.wg.driver import PeerStats
from pcloud.server.protocol import Peer

KEY = "A" * 43 + "="
PROXY = "127.0.0.1:40000"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def peer(*endpoints: str) -> Peer:
    return Peer(
        node_id=2, hostname="phone2", user="alice", role="client", tags=[], public_key=KEY,
        address="10.0.0.3", endpoints=list(endpoints), online=True, last_seen=None,
    )  # fmt: skip


def stats(endpoint: str | None, handshake_s: float | None, rx: int, tx: int = 0) -> PeerStats:
    hs = T0 + timedelta(seconds=handshake_s) if handshake_s is not None else None
    return PeerStats(KEY, endpoint, hs, rx, tx)


# WireGuard sent its first handshake initiation and heard nothing (the direct try's clock runs).
SENT = stats(None, None, 0, 148)


def step(
    paths: RelayPaths, p: Peer, s: PeerStats | None, t: float, up: bool = True, udp: bool = True
) -> bool:
    wall = T0 + timedelta(seconds=t)
    # The selector's order: public candidates before someone else's private ones.
    ranked = sorted(p.endpoints, key=lambda e: e.startswith("10."))
    return paths.update(
        [p], [s] if s else [], {KEY: PROXY}, t, wall, up, not udp, lambda key: ranked
    )


def test_relayed_after_one_short_direct_try_then_probed_back_to_direct() -> None:
    paths = RelayPaths()
    # Many candidates do not make the wait longer (it was two turns each, up to 20 s).
    p = peer("10.31.0.2:5000", "10.31.0.3:5000", "198.51.100.31:5000")
    assert not step(paths, p, SENT, 0.0)
    # No handshake a second in: initiate again (the change is the handshake try, not the relay).
    assert step(paths, p, SENT, DIRECT_TRY_S - 0.1) and paths.tries == {KEY: 1}
    assert not paths.relayed
    assert not step(paths, p, SENT, DIRECT_TRY_S, up=False)  # no relay up: nothing to switch to
    assert step(paths, p, SENT, 2.5) and paths.relayed == {KEY}
    # Handshakes through the proxy keep it there.
    assert not step(paths, p, stats(PROXY, 3.0, 100, 100), 3.0)
    # A probe once PROBE_FIRST_S passed and we send: the best candidate (public) is tried.
    t = 2.5 + PROBE_FIRST_S
    assert step(paths, p, stats(PROXY, 3.0, 200, 200), t)
    assert paths.relayed == set() and paths.trying == {KEY: "198.51.100.31:5000"}
    # A reply through the relay that raced the switch is in the counters when WireGuard first
    # shows the direct endpoint: counted from there, it is no answer.
    assert not step(paths, p, stats("198.51.100.31:5000", 3.0, 250, 250), t + 0.1)
    assert not paths.roamed
    # Packets arrive with the endpoint still direct: direct it is.
    assert not step(paths, p, stats("198.51.100.31:5000", 3.0, 300, 300), t + 0.5)
    assert paths.roamed == {KEY: "198.51.100.31:5000"} and not paths.trying


def test_a_direct_handshake_within_the_try_stays_direct() -> None:
    paths = RelayPaths()
    p = peer("198.51.100.31:5000")
    step(paths, p, SENT, 0.0)
    assert not step(paths, p, stats("198.51.100.31:5000", 0.5, 100), 0.6)
    for t in (DIRECT_TRY_S, 10.0, 30.0):  # packets keep arriving: never relayed
        assert not step(paths, p, stats("198.51.100.31:5000", 0.5, 100 + int(t)), t)
    assert paths.relayed == set()


def test_the_greater_key_of_a_pair_follows_instead_of_switching_at_the_same_time() -> None:
    leader, follower = RelayPaths(me="0" * 43 + "="), RelayPaths(me="B" * 43 + "=")
    p = peer("198.51.100.31:5000")
    for paths in (leader, follower):
        step(paths, p, SENT, 0.0)
    assert step(leader, p, SENT, DIRECT_TRY_S) and leader.relayed == {KEY}
    step(follower, p, SENT, DIRECT_TRY_S + FOLLOW_S - 0.1)  # (an initiation repeated)
    assert not follower.relayed
    # The leader's handshake came through the relay: WireGuard roamed to the proxy.
    assert step(follower, p, stats(PROXY, 4.0, 100), DIRECT_TRY_S + FOLLOW_S - 0.05)
    assert follower.relayed == {KEY}
    # Without that, the follower switches FOLLOW_S later by itself.
    alone = RelayPaths(me="B" * 43 + "=")
    step(alone, p, SENT, 0.0)
    assert step(alone, p, SENT, DIRECT_TRY_S + FOLLOW_S) and alone.relayed == {KEY}


def test_udp_blocked_relays_at_once() -> None:
    paths = RelayPaths()
    p = peer("10.40.0.2:5000", "203.0.113.40:5000")
    assert not step(paths, p, SENT, 0.0, up=False, udp=False)  # the WebSocket is not up yet
    assert step(paths, p, SENT, 0.3, udp=False) and paths.relayed == {KEY}


def test_the_peer_reaching_us_directly_ends_the_relay() -> None:
    paths = RelayPaths()
    p = peer("198.51.100.31:5000")
    step(paths, p, SENT, 0.0)
    assert step(paths, p, SENT, DIRECT_TRY_S) and paths.relayed == {KEY}
    step(paths, p, stats(PROXY, 2.5, 100), 2.5)
    # Its handshake came straight to us (WireGuard roamed): direct without waiting for a probe.
    assert step(paths, p, stats("198.51.100.31:5000", 3.0, 200), 3.0)
    assert paths.relayed == set() and paths.roamed == {KEY: "198.51.100.31:5000"}


def test_probes_wait_for_traffic_and_go_through_the_candidates_in_order() -> None:
    paths = RelayPaths()
    p = peer("10.31.0.2:5000", "198.51.100.31:5000")
    step(paths, p, SENT, 0.0)
    step(paths, p, SENT, DIRECT_TRY_S)
    step(paths, p, stats(PROXY, 2.5, 100, 100), 2.5)
    # Due, but nothing sent: a probe could not tell, so none yet.
    assert not step(paths, p, stats(PROXY, 2.5, 100, 100), 10.0)
    assert paths.relayed == {KEY}
    assert step(paths, p, stats(PROXY, 2.5, 100, 150), 11.0)  # we send: the probe starts
    assert paths.trying == {KEY: "198.51.100.31:5000"}
    step(paths, p, stats("198.51.100.31:5000", 2.5, 100, 150), 11.1)
    # We sent for a second and nothing came back: back on the relay at once.
    assert step(paths, p, stats("198.51.100.31:5000", 2.5, 100, 500), 12.1)
    assert paths.relayed == {KEY} and not paths.trying
    # The next probe, PROBE_EVERY_S later, tries the next candidate.
    assert not step(paths, p, stats(PROXY, 2.5, 100, 600), 12.1 + PROBE_EVERY_S - 1)
    assert step(paths, p, stats(PROXY, 2.5, 100, 700), 12.1 + PROBE_EVERY_S)
    assert paths.trying == {KEY: "10.31.0.2:5000"}


def test_new_candidates_reset_a_relayed_peer() -> None:
    paths = RelayPaths()
    step(paths, peer("10.31.0.2:5000"), SENT, 0.0)
    assert step(paths, peer("10.31.0.2:5000"), SENT, DIRECT_TRY_S) and paths.relayed == {KEY}
    # The peer reports a new address: direct gets a go again, and the relay after the try.
    assert step(paths, peer("10.31.0.9:6000"), stats(PROXY, 3.0, 100), 20.0)
    assert paths.relayed == set()
    step(paths, peer("10.31.0.9:6000"), stats("10.31.0.9:6000", 3.0, 100, 100), 20.1)
    assert step(paths, peer("10.31.0.9:6000"), stats("10.31.0.9:6000", 3.0, 100, 300), 21.5)
    assert paths.relayed == {KEY}  # the probe of the new address went unanswered


def test_a_probe_ends_when_the_peer_keeps_coming_through_the_relay() -> None:
    paths = RelayPaths()
    p = peer("198.51.100.31:5000")
    step(paths, p, SENT, 0.0)
    step(paths, p, SENT, DIRECT_TRY_S)
    step(paths, p, stats(PROXY, 2.5, 100, 100), 2.5)
    assert step(paths, p, stats(PROXY, 2.5, 100, 200), 2.0 + PROBE_FIRST_S)  # probing
    # WireGuard roamed back to the proxy: the peer's packets still come through the relay.
    assert step(paths, p, stats(PROXY, 2.5, 300, 300), 6.0)
    assert paths.relayed == {KEY} and not paths.roamed


def test_a_peer_we_send_nothing_to_stays_direct() -> None:
    """Idle peers after login are no reason to leave direct paths: the clock starts at our
    first send (an idle LAN pair was relayed, and its first packets lost to the probe)."""
    paths = RelayPaths()
    p = peer("192.168.0.112:5000")
    for t in (0.0, DIRECT_TRY_S, 30.0):
        assert not step(paths, p, stats(None, None, 0, 0), t)
    assert paths.relayed == set()
    assert not step(paths, p, SENT, 31.0)  # the first initiation: the try starts now
    step(paths, p, SENT, 31.0 + DIRECT_TRY_S - 0.1)  # (an initiation repeated)
    assert not paths.relayed and paths.tries == {KEY: 1}
    assert step(paths, p, SENT, 31.0 + DIRECT_TRY_S) and paths.relayed == {KEY}


def test_an_unanswered_initiation_is_repeated_each_second_until_a_handshake() -> None:
    """WireGuard waits 5 s after an unanswered initiation; the first one often reaches a peer
    that has not learned of us yet. A raised handshake try sets the peer afresh (wg/diff.py)."""
    paths = RelayPaths(me="Z" * 43 + "=")  # the greater key: it waits FOLLOW_S longer
    p = peer("198.51.100.31:5000")
    assert not step(paths, p, SENT, 0.0)
    assert not step(paths, p, SENT, RETRY_S - 0.1) and not paths.tries
    assert step(paths, p, SENT, RETRY_S) and paths.tries == {KEY: 1}
    assert not step(paths, p, SENT, RETRY_S + 0.5)  # one try a second
    assert step(paths, p, SENT, 2 * RETRY_S) and paths.tries == {KEY: 2}
    # The peer answered: no more tries, and the direct path stays.
    assert not step(paths, p, stats("198.51.100.31:5000", 2.2, 100, 300), 2.3)
    for t in (3.5, DIRECT_TRY_S + FOLLOW_S + 1, 10.0):
        assert not step(paths, p, stats("198.51.100.31:5000", 2.2, 100 + int(t), 300), t)
    assert paths.tries == {KEY: 2} and not paths.relayed
    # Gone from the netmap: forgotten.
    paths.update([], [], {}, 11.0, T0, True)
    assert not paths.tries


def test_retries_are_capped_and_wait_while_packets_arrive() -> None:
    """No relay to go to: the retries stop after MAX_RETRIES (each drops a handshake on its
    way, so a far peer needs WireGuard's own rhythm), and none while the peer's packets come
    in (a handshake we answered, counted by WireGuard at its first data packet)."""
    paths = RelayPaths()
    p = peer("198.51.100.31:5000")
    step(paths, p, SENT, 0.0, up=False)
    for t in range(1, 30):
        step(paths, p, SENT, float(t), up=False)
    assert paths.tries == {KEY: MAX_RETRIES} and not paths.relayed
    answering = RelayPaths()
    step(answering, p, SENT, 0.0, up=False)
    # 1 s in, the peer's initiation arrived (rx grew): no retry while that settles.
    assert not step(answering, p, stats(None, None, 148, 148), RETRY_S, up=False)
    assert not step(answering, p, stats(None, None, 148, 240), RETRY_S + 0.5, up=False)
    assert not answering.tries
    # Nothing more arrived for a second: try again.
    assert step(answering, p, stats(None, None, 148, 240), 2 * RETRY_S, up=False)
    assert answering.tries == {KEY: 1}
