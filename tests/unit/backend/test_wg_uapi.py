"""UAPI encode/parse against answers recorded from a real wireguard-go."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pcloud.backend.keys import PrivateKey
from pcloud.backend.wg.diff import ConfigDiff, PeerOp
from pcloud.backend.wg.driver import DriverError
from pcloud.backend.wg.uapi import UapiError, encode_set, parse_errno, parse_get

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "uapi"
A_PRIV = "8BA4p1aJEhnvdI/Gj/+RAzJQZT0L/YK9RJfbJZmnHVQ="
A_PUB = "fcb6xb+A5KWThMbshuKpI06bAr7OpSUgmAojyXP5KxY="
B_PUB = "lyQY4hRIeEZKdUaXMd6gmA6HBQQjMS7YAd5uVJs+8zY="
C_PUB = "/E1qS28Yx4z66wK58SdT9qN9x82vXNey7wtWBFqd1kI="


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_parse_two_peers_one_handshake() -> None:
    dev = parse_get(fixture("get_two_peers_one_handshake.txt"))
    assert dev.private_key == PrivateKey.from_b64(A_PRIV)
    assert dev.private_key is not None and dev.private_key.public_key() == A_PUB
    assert dev.listen_port == 51820
    assert [p.public_key for p in dev.peers] == [B_PUB, C_PUB]
    b, c = dev.peers
    assert b.endpoint == "192.168.77.2:51821"
    assert b.allowed_ips == ("10.99.0.2/32",)
    assert b.persistent_keepalive == 0
    assert b.last_handshake == datetime.fromtimestamp(1795620403.587031704, tz=UTC)
    assert (b.tx_bytes, b.rx_bytes) == (404, 348)
    assert c.endpoint == "[fd00::3]:51822"
    assert c.allowed_ips == ("10.99.0.3/32", "fd99::3/128")
    assert c.persistent_keepalive == 25
    assert c.last_handshake is None
    assert (c.tx_bytes, c.rx_bytes) == (0, 0)
    stats = dev.stats()
    assert stats[0].public_key == B_PUB and stats[0].rx_bytes == 348
    assert A_PRIV not in repr(dev)


def test_parse_one_peer() -> None:
    dev = parse_get(fixture("get_one_peer.txt"))
    assert dev.listen_port == 51821
    assert [p.public_key for p in dev.peers] == [A_PUB]
    assert dev.peers[0].endpoint == "192.168.77.1:51820"


def test_parse_fresh_device_has_no_key_and_no_peers() -> None:
    dev = parse_get(fixture("get_fresh.txt"))
    assert dev.private_key is None
    assert dev.listen_port == 41031
    assert dev.peers == ()


def test_recorded_error_raises_with_errno() -> None:
    with pytest.raises(UapiError) as info:
        parse_errno(fixture("set_invalid_key.txt"))
    assert info.value.errno == -22
    assert isinstance(info.value, DriverError)


def test_get_error_raises() -> None:
    with pytest.raises(UapiError):
        parse_get("errno=-5\n\n")


@pytest.mark.parametrize("text", ["", "listen_port=1\n\n", "junk\nerrno=0\n\n", "errno=x\n\n"])
def test_truncated_or_malformed_answers_raise(text: str) -> None:
    with pytest.raises(DriverError):
        parse_get(text)


def test_parse_ignores_unknown_keys_and_zero_private_key() -> None:
    dev = parse_get(f"private_key={'0' * 64}\nlisten_port=7\nfuture_thing=1\nerrno=0\n\n")
    assert dev.private_key is None and dev.listen_port == 7


def test_encode_set_full() -> None:
    change = ConfigDiff(
        private_key=PrivateKey.from_b64(A_PRIV),
        listen_port=51820,
        peers=(
            PeerOp(action="remove", public_key=C_PUB),
            PeerOp(
                action="add",
                public_key=B_PUB,
                endpoint="192.168.77.2:51821",
                persistent_keepalive=25,
                allowed_ips=("10.99.0.2/32",),
            ),
            PeerOp(action="update", public_key=A_PUB, endpoint="[fd00::1]:1"),
        ),
    )
    assert encode_set(change).decode() == (
        "set=1\n"
        "private_key=f01038a756891219ef748fc68fff91033250653d0bfd82bd4497db2599a71d54\n"
        "listen_port=51820\n"
        "public_key=fc4d6a4b6f18c78cfaeb02b9f12753f6a37dc7cdaf5cd7b2ef0b56045a9dd642\n"
        "remove=true\n"
        "public_key=972418e2144878464a75469731dea0980e87050423312ed801de6e549b3ef336\n"
        "endpoint=192.168.77.2:51821\n"
        "persistent_keepalive_interval=25\n"
        "replace_allowed_ips=true\n"
        "allowed_ip=10.99.0.2/32\n"
        "public_key=7dc6fac5bf80e4a59384c6ec86e2a9234e9b02becea52520980a23c973f92b16\n"
        "update_only=true\n"
        "endpoint=[fd00::1]:1\n"
        "\n"
    )


def test_encode_replace_peers_and_empty_allowed_ips() -> None:
    change = ConfigDiff(peers=(PeerOp(action="update", public_key=B_PUB, allowed_ips=()),))
    text = encode_set(change, replace_peers=True).decode()
    assert text.startswith("set=1\nreplace_peers=true\n")
    assert text.endswith("update_only=true\nreplace_allowed_ips=true\n\n")


def test_encode_parse_round_trip_through_fixture_keys() -> None:
    """What we encode for the recorded state's peers uses the hex the device prints."""
    dev = parse_get(fixture("get_two_peers_one_handshake.txt"))
    ops = tuple(
        PeerOp(action="add", public_key=p.public_key, allowed_ips=p.allowed_ips) for p in dev.peers
    )
    text = encode_set(ConfigDiff(peers=ops)).decode()
    recorded = fixture("get_two_peers_one_handshake.txt")
    for line in text.splitlines():
        if line.startswith(("public_key=", "allowed_ip=")):
            assert line in recorded


@pytest.mark.parametrize(
    "op",
    [
        PeerOp(
            action="add", public_key=B_PUB, endpoint="[fe80::1%a]:5\npublic_key=00\nremove=true"
        ),
        PeerOp(action="add", public_key=B_PUB, endpoint="1.2.3.4:5\n"),
        PeerOp(action="update", public_key=B_PUB, allowed_ips=("10.0.0.2/32\nremove=true",)),
        PeerOp(action="update", public_key=B_PUB, endpoint="a=b"),
        PeerOp(action="update", public_key=B_PUB, endpoint="1.2.3.4:\uff15"),
        PeerOp(action="remove", public_key="not a key\n"),
    ],
)
def test_encode_set_refuses_values_that_would_inject_lines(op: PeerOp) -> None:
    with pytest.raises(DriverError, match="refusing UAPI"):
        encode_set(ConfigDiff(peers=(op,)))
