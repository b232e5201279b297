"""Who goes through the relay (backend.relay.paths, pure): time and WireGuard's stats passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pcloud.backend.relay.paths import DIRECT_TRY_S, PROBE_FIRST_S, RelayPaths
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


def step(
    paths: RelayPaths, p: Peer, s: PeerStats | None, t: float, up: bool = True, udp: bool = True
) -> bool:
    wall = T0 + timedelta(seconds=t)
    return paths.update([p], [s] if s else [], {KEY: PROXY}, t, wall, up, udp_blocked=not udp)


def test_relayed_after_one_short_direct_try_then_probed_back_to_direct() -> None:
    paths = RelayPaths()
    # Many candidates do not make the wait longer (it was two turns each, up to 20 s).
    p = peer("10.31.0.2:5000", "10.31.0.3:5000", "198.51.100.31:5000")
    assert not step(paths, p, None, 0.0)
    assert not step(paths, p, None, DIRECT_TRY_S - 0.1)
    assert not step(paths, p, None, DIRECT_TRY_S, up=False)  # no relay up: nothing to switch to
    assert step(paths, p, None, DIRECT_TRY_S + 0.5) and paths.relayed == {KEY}
    # Handshakes through the proxy keep it there.
    assert not step(paths, p, stats(PROXY, 3.0, 100), 3.0)
    # A probe after PROBE_FIRST_S: the direct candidate is tried, and packets arrive with the
    # endpoint still direct (WireGuard did not roam back to the proxy): direct it is.
    assert step(paths, p, stats(PROXY, 3.0, 200), 3.0 + PROBE_FIRST_S)
    assert paths.relayed == set()
    assert not step(paths, p, stats("198.51.100.31:5000", 3.0, 300), 8.0)
    assert paths.roamed == {KEY: "198.51.100.31:5000"}


def test_a_direct_handshake_within_the_try_stays_direct() -> None:
    paths = RelayPaths()
    p = peer("198.51.100.31:5000")
    step(paths, p, None, 0.0)
    assert not step(paths, p, stats("198.51.100.31:5000", 0.5, 100), 0.6)
    for t in (DIRECT_TRY_S, 10.0, 30.0):  # packets keep arriving: never relayed
        assert not step(paths, p, stats("198.51.100.31:5000", 0.5, 100 + int(t)), t)
    assert paths.relayed == set()


def test_udp_blocked_relays_at_once() -> None:
    paths = RelayPaths()
    p = peer("10.40.0.2:5000", "203.0.113.40:5000")
    assert not step(paths, p, None, 0.0, up=False, udp=False)  # the WebSocket is not up yet
    assert step(paths, p, None, 0.3, udp=False) and paths.relayed == {KEY}


def test_the_peer_reaching_us_directly_ends_the_relay() -> None:
    paths = RelayPaths()
    p = peer("198.51.100.31:5000")
    step(paths, p, None, 0.0)
    assert step(paths, p, None, DIRECT_TRY_S) and paths.relayed == {KEY}
    step(paths, p, stats(PROXY, 2.5, 100), 2.5)
    # Its handshake came straight to us (WireGuard roamed): direct without waiting for a probe.
    assert step(paths, p, stats("198.51.100.31:5000", 3.0, 200), 3.0)
    assert paths.relayed == set() and paths.roamed == {KEY: "198.51.100.31:5000"}


def test_failed_probe_returns_to_the_relay_and_new_candidates_reset() -> None:
    paths = RelayPaths()
    p = peer("10.31.0.2:5000")
    step(paths, p, None, 0.0)
    assert step(paths, p, None, DIRECT_TRY_S) and paths.relayed == {KEY}
    step(paths, p, stats(PROXY, 3.0, 100, 100), 3.0)
    assert step(paths, p, stats(PROXY, 3.0, 100, 100), 3.0 + PROBE_FIRST_S)  # probing
    # We sent for a second and nothing came back: back on the relay at once.
    assert step(paths, p, stats("10.31.0.2:5000", 3.0, 100, 500), 4.0 + PROBE_FIRST_S)
    assert paths.relayed == {KEY}
    # The peer reports a new address: direct gets a go again, and the relay after the try.
    assert step(paths, peer("10.31.0.9:6000"), stats(PROXY, 3.0, 100), 20.0)
    assert paths.relayed == set()
