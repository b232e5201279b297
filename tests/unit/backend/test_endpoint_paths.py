"""Candidates across NATs (DESIGN section 9): which is tried first, what a handshake proves, and
the path `pcloud status` shows."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

from pcloud.backend.endpoints import EndpointSelector, local_networks, rank
from pcloud.backend.status import peer_path
from pcloud.backend.wg.driver import PeerStats
from tests.unit.backend.test_netmap_apply import key, peer

HOME = [ipaddress.IPv4Network("192.168.0.0/24")]
CAFE = [ipaddress.IPv4Network("10.20.0.0/24")]


def stat(endpoint: str | None, handshake: datetime | None, rx: int = 0) -> PeerStats:
    return PeerStats(key(2), endpoint, handshake, rx, 0)


def test_rank_puts_our_lan_first_then_public_then_other_lans() -> None:
    cands = ["10.20.0.2:5", "203.0.113.10:7", "192.168.0.112:7"]
    assert sorted(cands, key=lambda e: rank(e, HOME)) == [
        "192.168.0.112:7", "203.0.113.10:7", "10.20.0.2:5",
    ]  # fmt: skip
    assert sorted(cands, key=lambda e: rank(e, CAFE))[0] == "10.20.0.2:5"
    assert rank("[2001:db8::1]:5", HOME) == 1


def test_local_networks_skips_wireguard_and_loopback() -> None:
    nets = local_networks(
        [("lo", "127.0.0.1/8"), ("eth0", "192.168.0.112/24"), ("pcloud0", "10.0.0.3/24")],
        "pcloud0",
    )
    assert nets == HOME


def test_a_handshake_from_before_a_candidate_was_set_does_not_confirm_it() -> None:
    sel = EndpointSelector(try_for=5)
    p = peer(2, ["203.0.113.10:7", "192.168.0.111:7"])
    t0 = datetime.now(UTC)
    sel.update([p], [], now=0.0, wall_now=t0, local_nets=CAFE)
    assert sel.chosen()[key(2)] == "203.0.113.10:7"
    old = t0 - timedelta(seconds=30)  # fresh (< 3 min) but older than the candidate
    sel.update([p], [stat("203.0.113.10:7", old)], now=5.0, wall_now=t0 + timedelta(seconds=5))
    assert sel.chosen()[key(2)] == "192.168.0.111:7" and sel.pending()


def test_a_roamed_endpoint_with_a_fresh_handshake_is_kept() -> None:
    sel = EndpointSelector(try_for=5)
    p = peer(2, ["198.51.100.20:7"])
    t0 = datetime.now(UTC)
    sel.update([p], [], now=0.0, wall_now=t0)
    # The peer reached us from another port of its NAT: WireGuard roamed there.
    assert sel.update([p], [stat("198.51.100.20:9", t0)], now=1.0, wall_now=t0)
    assert sel.chosen()[key(2)] == "198.51.100.20:9" and not sel.pending()
    # Silence for minutes: the learned path is dropped, the candidates are tried again.
    later = t0 + timedelta(minutes=5)
    assert sel.update([p], [stat("198.51.100.20:9", t0)], now=300.0, wall_now=later)
    assert sel.chosen()[key(2)] == "198.51.100.20:7"


def test_a_handshake_racing_the_switch_does_not_confirm_the_new_candidate() -> None:
    sel = EndpointSelector(try_for=5)
    p = peer(2, ["203.0.113.10:7", "192.168.0.111:7"])
    t0 = datetime.now(UTC)
    sel.update([p], [], now=0.0, wall_now=t0, local_nets=CAFE)
    t5 = t0 + timedelta(seconds=5)
    assert sel.update([p], [], now=5.0, wall_now=t5)  # no answer: the LAN candidate's turn
    # The public candidate's handshake landed just after that decision, before WireGuard got
    # the new endpoint: it proves nothing about the LAN address.
    hs = t5 + timedelta(seconds=0.2)
    sel.update(
        [p], [stat("192.168.0.111:7", hs, rx=5)], now=6.0, wall_now=t5 + timedelta(seconds=1)
    )
    assert sel.pending()


def test_a_learned_endpoint_stays_while_packets_arrive_and_goes_when_they_stop() -> None:
    sel = EndpointSelector(try_for=5)
    p = peer(2, ["203.0.113.10:7"])
    t0 = datetime.now(UTC)
    sel.update([p], [], now=0.0, wall_now=t0)
    assert sel.update([p], [stat("203.0.113.10:9", t0, rx=100)], now=1.0, wall_now=t0)
    # Keepalives keep arriving long after the handshake: the roamed path is kept.
    for i in range(1, 7):
        now = 1.0 + 20 * i
        wall = t0 + timedelta(seconds=now)
        assert not sel.update([p], [stat("203.0.113.10:9", t0, rx=100 + i)], now, wall)
        assert sel.chosen()[key(2)] == "203.0.113.10:9"
    # Then nothing for ALIVE_S, the handshake still under 3 minutes old: dead, not "fresh".
    wall = t0 + timedelta(seconds=160)
    assert sel.update([p], [stat("203.0.113.10:9", t0, rx=106)], 160.0, wall)
    assert sel.chosen()[key(2)] == "203.0.113.10:7"


def test_a_dead_confirmed_candidate_is_left_for_the_next() -> None:
    sel = EndpointSelector(try_for=5)
    p = peer(2, ["192.168.0.111:7", "203.0.113.10:7"])
    t0 = datetime.now(UTC)
    sel.update([p], [], now=0.0, wall_now=t0, local_nets=HOME)
    hs = t0 + timedelta(seconds=1)
    sel.update([p], [stat("192.168.0.111:7", hs, rx=10)], 1.0, hs, HOME)
    assert not sel.pending()
    # The LAN path goes quiet (the peer left the LAN): 40 s later its handshake, "recent" by
    # WireGuard's rekey period, no longer holds the choice; the next candidate is tried.
    wall = t0 + timedelta(seconds=41)
    assert sel.update([p], [stat("192.168.0.111:7", hs, rx=10)], 41.0, wall, HOME)
    assert sel.chosen()[key(2)] == "203.0.113.10:7" and sel.pending()


def test_peer_path_says_direct_or_why_not() -> None:
    now = datetime.now(UTC)
    p = peer(2, ["203.0.113.10:7"])
    assert peer_path(p, stat("203.0.113.10:7", now), now) == "direct 203.0.113.10:7"
    stale = stat("203.0.113.10:7", now - timedelta(minutes=4))
    assert peer_path(p, stale, now) == "no path (no handshake on 203.0.113.10:7)"
    assert peer_path(peer(2, []), None, now) == "no path (the peer reported no endpoint)"
    assert peer_path(peer(2, ["1.2.3.4:5"], online=False), None, now) == (
        "no path (the peer is offline)"
    )
