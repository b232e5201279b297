"""diff(): current interface vs desired config -> the minimal changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pcloud.backend.keys import PrivateKey
from pcloud.backend.wg.diff import (
    DeviceState,
    PeerOp,
    PeerState,
    applied_endpoints,
    applied_tries,
    diff,
    normalize_allowed_ips,
    normalize_endpoint,
)
from pcloud.backend.wg.driver import DriverError, InterfaceConfig, PeerConfig

KEY = PrivateKey.generate()
SHOOK = datetime(2026, 1, 1, tzinfo=UTC)  # a peer with a session
P1, P2, P3 = (PrivateKey.generate().public_key() for _ in range(3))


def cfg(*peers: PeerConfig, port: int | None = 51820, key: PrivateKey = KEY) -> InterfaceConfig:
    return InterfaceConfig(
        private_key=key.b64(), address="10.0.0.1/24", listen_port=port, peers=peers
    )


def state(*peers: PeerState, port: int = 51820, key: PrivateKey | None = KEY) -> DeviceState:
    return DeviceState(private_key=key, listen_port=port, peers=peers)


def test_fresh_device_gets_key_port_and_all_peers() -> None:
    d = diff(
        DeviceState(listen_port=41031),
        cfg(PeerConfig(P1, ("10.0.0.2/32",), "192.0.2.1:51820", 25)),
    )
    assert d.private_key == KEY and d.listen_port == 51820
    assert d.peers == (PeerOp("add", P1, "192.0.2.1:51820", 25, ("10.0.0.2/32",)),)


def test_identical_config_is_empty() -> None:
    cur = state(PeerState(P1, "192.0.2.1:51820", ("10.0.0.2/32",), 25))
    d = diff(cur, cfg(PeerConfig(P1, ("10.0.0.2/32",), "192.0.2.1:51820", 25)))
    assert d.empty


def test_listen_port_none_keeps_current() -> None:
    assert diff(state(port=40000), cfg(port=None)).empty


def test_remove_update_add() -> None:
    cur = state(
        PeerState(P1, "192.0.2.1:1", ("10.0.0.2/32",), 0, SHOOK),
        PeerState(P2, "192.0.2.2:2", ("10.0.0.3/32",), 0),
    )
    d = diff(
        cur,
        cfg(
            PeerConfig(P1, ("10.0.0.2/32", "10.1.0.0/16"), "192.0.2.9:1", 0),
            PeerConfig(P3, ("10.0.0.4/32",)),
        ),
    )
    assert d.private_key is None and d.listen_port is None
    assert d.peers == (
        PeerOp("remove", P2),
        PeerOp("update", P1, endpoint="192.0.2.9:1", allowed_ips=("10.0.0.2/32", "10.1.0.0/16")),
        PeerOp("add", P3, allowed_ips=("10.0.0.4/32",)),
    )


def test_only_keepalive_changed() -> None:
    cur = state(PeerState(P1, "192.0.2.1:1", ("10.0.0.2/32",), 25))
    d = diff(cur, cfg(PeerConfig(P1, ("10.0.0.2/32",), "192.0.2.1:1", None)))
    assert d.peers == (PeerOp("update", P1, persistent_keepalive=0),)


def test_no_endpoint_wanted_keeps_roamed_endpoint() -> None:
    cur = state(PeerState(P1, "198.51.100.7:4444", ("10.0.0.2/32",)))
    assert diff(cur, cfg(PeerConfig(P1, ("10.0.0.2/32",)))).empty


def test_reapply_keeps_the_endpoint_wireguard_roamed_to() -> None:
    want = cfg(PeerConfig(P1, ("10.0.0.2/32",), "192.168.0.7:51820", 25))
    # Applied once; then the peer's packets came from its NAT's public side: WireGuard roamed.
    cur = state(PeerState(P1, "198.51.100.7:4444", ("10.0.0.2/32",), 25, SHOOK))
    assert diff(cur, want, applied_endpoints(want)).empty
    # Only a change of what we want is set (e.g. the selector moved on to another candidate).
    moved = cfg(PeerConfig(P1, ("10.0.0.2/32",), "[::ffff:203.0.113.9]:7", 25))
    assert diff(cur, moved, applied_endpoints(want)).peers == (
        PeerOp("update", P1, endpoint="203.0.113.9:7"),
    )
    # Nothing applied by us yet (an interface adopted after a restart): compared with WireGuard.
    assert diff(cur, want, {}).peers == (PeerOp("update", P1, endpoint="192.168.0.7:51820"),)
    assert applied_endpoints(moved) == {P1: "203.0.113.9:7"}
    # Applied without an endpoint (the peer had no candidates yet), then the peer's handshake
    # came in: its first candidates do not replace the address it really sends from.
    bare = cfg(PeerConfig(P1, ("10.0.0.2/32",), None, 25))
    assert diff(cur, want, applied_endpoints(bare)).empty


def test_a_peer_without_a_handshake_is_set_afresh_when_its_endpoint_changes() -> None:
    # Known without an endpoint (it had no candidates yet); now it has one. Set afresh,
    # WireGuard initiates at once instead of waiting out its 5 s retry.
    want = cfg(PeerConfig(P1, ("10.0.0.2/32",), "198.51.100.20:5", 25))
    cur = state(PeerState(P1, None, ("10.0.0.2/32",), 25))
    assert diff(cur, want, {P1: None}).peers == (
        PeerOp("remove", P1),
        PeerOp("add", P1, "198.51.100.20:5", 25, ("10.0.0.2/32",)),
    )
    # A peer with a session keeps it: only the endpoint is updated.
    shook = state(PeerState(P1, "192.0.2.1:5", ("10.0.0.2/32",), 25, SHOOK))
    assert diff(shook, want, {P1: "192.0.2.1:5"}).peers == (
        PeerOp("update", P1, endpoint="198.51.100.20:5"),
    )
    # Nothing else changed: nothing is set afresh.
    assert diff(state(PeerState(P1, "198.51.100.20:5", ("10.0.0.2/32",), 25)), want).empty


def test_a_raised_handshake_try_sets_a_sessionless_peer_afresh_only() -> None:
    # The endpoint is unchanged; the relay's path choice raised the try (no answer for 1 s).
    applied = cfg(PeerConfig(P1, ("10.0.0.2/32",), "198.51.100.20:5", 25))
    want = cfg(PeerConfig(P1, ("10.0.0.2/32",), "198.51.100.20:5", 25, handshake_try=1))
    assert applied_tries(applied) == {P1: 0} and applied_tries(want) == {P1: 1}
    cur = state(PeerState(P1, "198.51.100.20:5", ("10.0.0.2/32",), 25))
    last = applied_endpoints(applied)
    assert diff(cur, want, last, applied_tries(applied)).peers == (
        PeerOp("remove", P1),
        PeerOp("add", P1, "198.51.100.20:5", 25, ("10.0.0.2/32",)),
    )
    # Applied already: nothing more. A session is never dropped for a try.
    assert diff(cur, want, last, applied_tries(want)).empty
    shook = state(PeerState(P1, "198.51.100.20:5", ("10.0.0.2/32",), 25, SHOOK))
    assert diff(shook, want, last, applied_tries(applied)).empty


def test_allowed_ips_compare_as_sets_of_networks() -> None:
    cur = state(PeerState(P1, None, ("10.0.0.2/32", "fd00::/64")))
    d = diff(cur, cfg(PeerConfig(P1, ("fd00::1/64", "10.0.0.2/32", "10.0.0.2/32"))))
    assert d.empty


def test_changed_private_key_is_set() -> None:
    other = PrivateKey.generate()
    assert diff(state(key=other), cfg()).private_key == KEY


def test_a_new_private_key_sets_every_kept_peer_afresh() -> None:
    # A login as a new node on the interface of the old one: the old key's sessions (and
    # their handshake times) must not pass for live paths.
    other = PrivateKey.generate()
    cur = state(PeerState(P1, "192.0.2.1:1", ("10.0.0.2/32",), 25, SHOOK), key=other)
    d = diff(cur, cfg(PeerConfig(P1, ("10.0.0.2/32",), "192.0.2.1:1", 25)))
    assert d.private_key == KEY
    assert d.peers == (
        PeerOp("remove", P1),
        PeerOp("add", P1, "192.0.2.1:1", 25, ("10.0.0.2/32",)),
    )
    # The same key: nothing to do.
    assert diff(
        state(PeerState(P1, "192.0.2.1:1", ("10.0.0.2/32",), 25, SHOOK)),
        cfg(PeerConfig(P1, ("10.0.0.2/32",), "192.0.2.1:1", 25)),
    ).empty


def test_equivalent_endpoint_spellings_do_not_update() -> None:
    cur = state(PeerState(P1, "[fd00::1]:5", ("10.0.0.2/32",)))
    assert diff(cur, cfg(PeerConfig(P1, ("10.0.0.2/32",), "[fd00:0::1]:5"))).empty


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ("192.0.2.1:51820", "192.0.2.1:51820"),
        ("[2001:db8::1]:1", "[2001:db8::1]:1"),
        ("[2001:DB8:0::1]:1", "[2001:db8::1]:1"),
        ("[::ffff:192.0.2.1]:7", "192.0.2.1:7"),
    ],
)
def test_normalize_endpoint(given: str, want: str) -> None:
    assert normalize_endpoint(given) == want


@pytest.mark.parametrize("bad", ["192.0.2.1", "host.example:1", "192.0.2.1:0", "1.2.3.4:99999"])
def test_bad_endpoint_rejected(bad: str) -> None:
    with pytest.raises(DriverError):
        normalize_endpoint(bad)


def test_normalize_allowed_ips_clears_host_bits_and_sorts() -> None:
    assert normalize_allowed_ips(["fd00::5/64", "10.0.0.7/24", "10.0.0.0/24"]) == (
        "10.0.0.0/24",
        "fd00::/64",
    )
    with pytest.raises(DriverError):
        normalize_allowed_ips(["nope"])


def test_duplicate_or_self_peer_rejected() -> None:
    with pytest.raises(DriverError):
        diff(state(), cfg(PeerConfig(P1, ()), PeerConfig(P1, ())))
    with pytest.raises(DriverError):
        diff(state(), cfg(PeerConfig(KEY.public_key(), ())))


def test_invalid_peer_key_rejected() -> None:
    with pytest.raises(DriverError):
        diff(state(), cfg(PeerConfig("short", ())))


def test_clamped_key_reported_by_wireguard_counts_as_same() -> None:
    raw = bytearray(KEY.raw())
    raw[0] |= 7  # desired key unclamped; the device reports KEY (clamped)
    unclamped = PrivateKey(bytes(raw))
    assert diff(state(key=KEY), cfg(key=unclamped)).private_key is None


@pytest.mark.parametrize(
    "hostile",
    [
        "[fe80::1%eth0]:51820",
        "[fe80::1%eth0]:51820\npublic_key=00\nremove=true",
        "192.0.2.1:51820\n",
        " 192.0.2.1:51820",
        "192.0.2.1:5=1",
        "[192.0.2.1]:5",
        "[[::1]]:5",
        "::1:5",
        "192.0.2.1:\uff11\uff12",
        "0.0.0.0:1",
        "255.255.255.255:1",
        "224.0.0.1:1",
        "[ff02::1]:1",
        "[::ffff:0.0.0.0]:1",
        "192.0.2.1:" + "5" * 5000,  # int() would raise ValueError, not DriverError
    ],
)
def test_hostile_endpoint_rejected(hostile: str) -> None:
    with pytest.raises(DriverError):
        normalize_endpoint(hostile)


def test_roamed_endpoint_with_a_zone_is_replaced_not_an_error() -> None:
    # wireguard-go prints a link-local source it learnt by roaming with its zone: the wanted
    # endpoint is then simply different.
    cur = state(PeerState(P1, "[fe80::1%eth0]:5", ("10.0.0.2/32",), last_handshake=SHOOK))
    d = diff(cur, cfg(PeerConfig(P1, ("10.0.0.2/32",), "192.0.2.1:5")))
    assert d.peers == (PeerOp("update", P1, endpoint="192.0.2.1:5"),)
