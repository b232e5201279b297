"""Netmap deltas, the desired WireGuard config, endpoint candidates and our own endpoints."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from pcloud.backend.endpoints import EndpointSelector, local_endpoints
from pcloud.backend.netmap import (
    KEEPALIVE_S,
    NetmapError,
    apply_netmap,
    desired_config,
    interface_address,
    vet_netmap,
)
from pcloud.backend.wg.driver import PeerStats
from pcloud.server.protocol import Netmap, Peer


def key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


def peer(n: int, endpoints: list[str] | None = None, **kw: object) -> Peer:
    data: dict[str, object] = dict(
        node_id=n,
        hostname=f"h{n}",
        user="alice",
        role="client",
        tags=[],
        public_key=key(n),
        address=f"10.0.0.{n}",
        endpoints=endpoints if endpoints is not None else [],
        online=True,
        last_seen=None,
    )
    data.update(kw)
    return Peer.model_validate(data)


ME = peer(1)


def full(version: int, *peers: Peer) -> Netmap:
    return Netmap(
        version=version, full=True, self=ME, peers=list(peers), servers=["https://10.0.0.1:8443"]
    )


def test_full_answer_replaces() -> None:
    held = full(1, peer(2), peer(3))
    got = apply_netmap(held, full(5, peer(4)))
    assert [p.node_id for p in got.peers] == [4] and got.version == 5


def test_delta_changes_adds_and_removes() -> None:
    held = full(1, peer(2), peer(3))
    delta = Netmap(
        version=2,
        full=False,
        self=ME,
        peers_changed=[peer(3, ["192.168.0.3:5000"]), peer(9)],
        peers_removed=[2],
    )
    got = apply_netmap(held, delta)
    assert [p.node_id for p in got.peers] == [3, 9]
    assert got.peers[0].endpoints == ["192.168.0.3:5000"]
    assert got.full and got.version == 2 and not got.peers_changed and not got.peers_removed
    assert got.servers == held.servers  # a delta without servers keeps the known list


def test_delta_keeps_the_domain() -> None:
    held = full(1, peer(2)).model_copy(update={"domain": "home.internal"})
    delta = Netmap(version=2, full=False, self=ME, peers_changed=[peer(3)], domain="home.internal")
    assert apply_netmap(held, delta).domain == "home.internal"
    older = Netmap(version=3, full=False, self=ME, peers_changed=[peer(4)])  # no domain field
    assert apply_netmap(held, older).domain == "home.internal"


def test_removing_unknown_peer_is_harmless_and_held_is_untouched() -> None:
    held = full(1, peer(2))
    got = apply_netmap(held, Netmap(version=2, full=False, self=ME, peers_removed=[77]))
    assert [p.node_id for p in got.peers] == [2]
    assert apply_netmap(held, Netmap(version=3, full=False, self=ME, peers_removed=[2])).peers == []
    assert [p.node_id for p in held.peers] == [2]


def test_delta_without_held_map_is_refused() -> None:
    with pytest.raises(ValueError, match="before any full netmap"):
        apply_netmap(None, Netmap(version=1, full=False, self=ME))


def test_desired_config() -> None:
    nm = full(1, peer(2, ["192.168.0.2:51820", "203.0.113.5:4000"]), peer(3), ME)
    cfg = desired_config(
        nm,
        private_key="PRIV",
        network="10.0.0.0/24",
        listen_port=51820,
        endpoints={key(2): "203.0.113.5:4000"},
    )
    assert cfg.address == "10.0.0.1/24" and cfg.private_key == "PRIV" and cfg.listen_port == 51820
    assert [p.public_key for p in cfg.peers] == [key(2), key(3)]  # never ourselves
    p2, p3 = cfg.peers
    assert p2.allowed_ips == ("10.0.0.2/32",) and p2.endpoint == "203.0.113.5:4000"
    assert p3.endpoint is None and p3.persistent_keepalive == KEEPALIVE_S
    first = desired_config(nm, private_key="P", network="10.0.0.0/24")
    assert first.peers[0].endpoint == "192.168.0.2:51820"


def other_spelling(k: str) -> str:
    """The same 32 bytes in another base64 spelling (the last character's padding bits)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return k[:42] + alphabet[alphabet.index(k[42]) ^ 1] + "="


def test_vet_netmap_keeps_good_peers_and_names_each_bad_one() -> None:
    good = peer(2, ["192.0.2.2:51820"])
    nm = full(
        1,
        ME,
        good,
        peer(3, ["[fe80::1%eth0]:51820\npublic_key=00\nremove=true"], hostname="evil"),
        peer(4, public_key=other_spelling(key(2))),  # same key bytes as peer 2
        peer(5, public_key=other_spelling(key(1))),  # this device's key
        peer(6, address="10.0.0.2"),  # peer 2's address
        peer(7, address="192.168.0.1"),  # outside the network: would capture LAN traffic
        peer(8, address="10.0.0.255"),  # the broadcast address
        peer(9, address="10.0.0.9\n"),
        peer(10, hostname="srv1\n"),
        peer(11, public_key="A" * 43 + "="),
        peer(12, ["1.2.3.4:5"] * 17),
        peer(13, public_key=other_spelling(key(13))),  # odd spelling, else fine: canonicalised
    )
    vetted, skipped = vet_netmap(nm, "10.0.0.0/24")
    assert [p.node_id for p in vetted.peers] == [2, 13]
    assert vetted.peers[1].public_key == key(13)
    reasons = dict(line.split(": ", 1) for line in skipped)
    assert list(reasons) == [
        f"peer {n} ('{h}')"
        for n, h in [
            (3, "evil"),
            (4, "h4"),
            (5, "h5"),
            (6, "h6"),
            (7, "h7"),
            (8, "h8"),
            (9, "h9"),
            (10, "srv1\\n"),
            (11, "h11"),
            (12, "h12"),
        ]
    ]
    assert "not a plain numeric ip:port" in reasons["peer 3 ('evil')"]
    assert reasons["peer 4 ('h4')"] == "has the same public key as peer 2 ('h2')"
    assert reasons["peer 5 ('h5')"] == "has the same public key as this device"
    assert reasons["peer 6 ('h6')"] == "claims address 10.0.0.2, which peer 2 ('h2') has"
    assert "not a host address" in reasons["peer 7 ('h7')"]
    assert "low-order" in reasons["peer 11 ('h11')"]
    # The config derived from the vetted map never holds a refused peer.
    cfg = desired_config(vetted, private_key="P", network="10.0.0.0/24")
    assert [p.public_key for p in cfg.peers] == [key(2), key(13)]


def test_vet_netmap_refuses_an_unusable_self_entry() -> None:
    with pytest.raises(NetmapError, match="outside the network"):
        vet_netmap(full(1, peer(2)), "10.9.0.0/24")
    bad_self = Netmap(version=1, full=True, self=peer(1, public_key="x"), peers=[])
    with pytest.raises(NetmapError, match="this device"):
        vet_netmap(bad_self, "10.0.0.0/24")


def test_interface_address() -> None:
    assert interface_address("10.0.3.4", "10.0.0.0/16") == "10.0.3.4/16"
    assert interface_address("100.64.0.9", "100.64.0.0/10") == "100.64.0.9/10"


def stats(k: str, handshake: datetime | None) -> PeerStats:
    return PeerStats(public_key=k, endpoint=None, last_handshake=handshake, rx_bytes=0, tx_bytes=0)


def test_selector_tries_next_candidate_after_timeout_then_sticks() -> None:
    sel = EndpointSelector(try_for=5)
    p = peer(2, ["a:1", "b:2", "c:3"])
    now = datetime.now(UTC)
    assert sel.update([p], [], now=0.0, wall_now=now)  # new peer
    assert sel.chosen() == {key(2): "a:1"} and sel.pending()
    assert not sel.update([p], [stats(key(2), None)], now=4.9, wall_now=now)
    assert sel.update([p], [stats(key(2), None)], now=5.0, wall_now=now)
    assert sel.chosen()[key(2)] == "b:2"
    assert sel.update([p], [], now=10.0, wall_now=now)
    assert sel.chosen()[key(2)] == "c:3"
    assert sel.update([p], [], now=15.0, wall_now=now)
    assert sel.chosen()[key(2)] == "a:1"  # round and round
    # A handshake on the current candidate: it sticks, however long it takes.
    hs = now + timedelta(seconds=2)
    assert not sel.update([p], [stats(key(2), hs)], now=20.0, wall_now=hs)
    assert not sel.update([p], [stats(key(2), hs)], now=99.0, wall_now=hs)
    assert sel.chosen()[key(2)] == "a:1" and not sel.pending()
    # Long silence (stale handshake): back to trying.
    later = now + timedelta(minutes=10)
    assert sel.update([p], [stats(key(2), hs)], now=200.0, wall_now=later)
    assert sel.chosen()[key(2)] == "b:2"


def test_selector_single_candidate_never_rotates_and_keeps_choice_on_new_list() -> None:
    sel = EndpointSelector(try_for=1)
    sel.update([peer(2, ["a:1"])], [], now=0.0)
    assert not sel.update([peer(2, ["a:1"])], [], now=100.0)
    assert not sel.pending()
    sel.update([peer(3, ["x:1", "y:2"])], [], now=0.0)
    sel.update([peer(3, ["x:1", "y:2"])], [], now=2.0)
    assert sel.chosen()[key(3)] == "y:2"
    # The server adds a candidate: the working choice is kept.
    sel.update([peer(3, ["z:9", "x:1", "y:2"])], [], now=3.0)
    assert sel.chosen()[key(3)] == "y:2"
    # Peer gone: forgotten.
    assert sel.update([], [], now=4.0)
    assert sel.chosen() == {}


def test_local_endpoints() -> None:
    addrs = [
        ("lo", "127.0.0.1"),
        ("eth0", "192.168.0.11"),
        ("pcloud0", "10.0.0.2"),
        ("eth1", "169.254.1.1"),
        ("eth2", "fe80::1"),
        ("wlan0", "172.16.5.4"),
        ("eth0", "192.168.0.11"),
    ]
    assert local_endpoints(addrs, 51820, "pcloud0") == ["172.16.5.4:51820", "192.168.0.11:51820"]


def test_intake_tells_news_from_a_quiet_answer_and_a_server_list_change() -> None:
    from pcloud.backend.local.intake import intake

    held = full(1, peer(2))
    quiet = Netmap(version=1, full=False, self=ME)
    assert intake(held, quiet) == (None, False)
    assert intake(None, quiet) == (None, False)  # a delta before any full map waits
    servers = Netmap(
        version=2, full=False, self=ME, servers=["https://10.0.0.1:8443", "https://10.0.0.2:8443"]
    )
    merged, tunnels = intake(held, servers)
    assert merged is not None and len(merged.servers) == 2 and not tunnels
    merged, tunnels = intake(held, Netmap(version=3, full=False, self=ME, peers_removed=[2]))
    assert merged is not None and merged.peers == [] and tunnels
