"""Who goes through the relay (backend.relay.paths, pure): time and WireGuard's stats passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pcloud.backend.relay.paths import MAX_WAIT_S, PROBE_FIRST_S, RelayPaths
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


def step(paths: RelayPaths, p: Peer, s: PeerStats | None, t: float, up: bool = True) -> bool:
    return paths.update([p], [s] if s else [], {KEY: PROXY}, t, T0 + timedelta(seconds=t), up)


def test_relayed_after_every_candidate_had_two_turns_then_probed_back_to_direct() -> None:
    paths = RelayPaths(try_for=5.0)
    p = peer("10.31.0.2:5000", "198.51.100.31:5000")
    assert not step(paths, p, None, 0.0)
    assert not step(paths, p, None, 19.0)  # 2 candidates x 2 turns x 5 s
    assert not step(paths, p, None, 25.0, up=False)  # no relay up: nothing to switch to
    assert step(paths, p, None, 26.0) and paths.relayed == {KEY}
    # Handshakes through the proxy keep it there.
    assert not step(paths, p, stats(PROXY, 27.0, 100), 28.0)
    # A probe after PROBE_FIRST_S: the direct candidate is tried, and packets arrive with the
    # endpoint still direct (WireGuard did not roam back to the proxy): direct it is.
    assert step(paths, p, stats(PROXY, 27.0, 200), 28.0 + PROBE_FIRST_S)
    assert paths.relayed == set()
    assert not step(paths, p, stats("198.51.100.31:5000", 27.0, 300), 39.0)
    assert paths.roamed == {KEY: "198.51.100.31:5000"}


def test_failed_probe_returns_to_the_relay_and_new_candidates_reset() -> None:
    paths = RelayPaths(try_for=5.0)
    p = peer("10.31.0.2:5000")
    step(paths, p, None, 0.0)
    assert step(paths, p, None, MAX_WAIT_S) and paths.relayed == {KEY}
    step(paths, p, stats(PROXY, 21.0, 100, 100), 22.0)
    assert step(paths, p, stats(PROXY, 21.0, 100, 100), 22.0 + PROBE_FIRST_S)  # probing
    # We sent for a second and nothing came back: back on the relay at once.
    assert step(paths, p, stats("10.31.0.2:5000", 21.0, 100, 500), 33.5)
    assert paths.relayed == {KEY}
    # The peer reports a new address: direct gets a full go again.
    assert step(paths, peer("10.31.0.9:6000"), stats(PROXY, 21.0, 100), 34.0)
    assert paths.relayed == set()
