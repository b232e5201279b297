"""The wire validators on hostile input: canonical public keys, low-order points, endpoints."""

from __future__ import annotations

import base64

import nacl.bindings
import nacl.exceptions
import nacl.public
import pytest

from pcloud.server.protocol import (
    LOW_ORDER_POINTS,
    EndpointsUpdate,
    check_endpoint,
    check_hostname,
    check_public_key,
    check_tag,
    check_username,
)


def spellings(raw: bytes) -> list[str]:
    """The four base64 spellings of 32 bytes: the last character's two low bits are padding."""
    canonical = base64.b64encode(raw).decode()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    base = alphabet.index(canonical[42]) & ~3
    return [canonical[:42] + alphabet[base + i] + "=" for i in range(4)]


def test_every_spelling_of_a_key_is_its_canonical_form() -> None:
    raw = bytes(nacl.public.PrivateKey.generate().public_key)
    forms = spellings(raw)
    assert len(set(forms)) == 4
    assert {base64.b64decode(f) for f in forms} == {raw}  # what b64decode silently accepts
    assert {check_public_key(f) for f in forms} == {base64.b64encode(raw).decode()}


def test_low_order_points_are_the_ones_libsodium_refuses() -> None:
    # libsodium's X25519 refuses exactly these inputs (has_small_order); the list in
    # pcloud.server.protocol must agree with it, bit 255 set or not.
    scalar = bytes(nacl.public.PrivateKey.generate())
    for point in LOW_ORDER_POINTS:
        for top in (0, 0x80):
            candidate = point[:31] + bytes([point[31] | top])
            with pytest.raises(nacl.exceptions.RuntimeError):
                nacl.bindings.crypto_scalarmult(scalar, candidate)
            with pytest.raises(ValueError, match="public_key"):
                check_public_key(base64.b64encode(candidate).decode())


def test_zero_key_is_refused() -> None:
    with pytest.raises(ValueError, match="low-order"):
        check_public_key("A" * 43 + "=")


@pytest.mark.parametrize(
    "good", ["192.0.2.1:51820", "203.0.113.5:1", "192.168.0.12:65535", "[2001:db8::1]:51820"]
)
def test_canonical_endpoints_pass(good: str) -> None:
    assert check_endpoint(good) == good


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("[fe80::1%eth0]:51820", "zone"),
        ("[fe80::1%eth0]:51820\npublic_key=00\nremove=true", "printable"),
        ("[2001:db8::1%x]:5", "zone"),
        ("192.0.2.1:51820\n", "printable"),
        (" 192.0.2.1:5", "IPv4:port"),
        ("0.0.0.0:1", "unspecified"),
        ("0.1.2.3:1", "reserved"),
        ("255.255.255.255:1", "reserved"),
        ("240.0.0.1:1", "reserved"),
        ("224.0.0.1:1", "multicast"),
        ("[ff02::1]:1", "multicast"),
        ("127.0.0.1:22", "loopback"),
        ("[::1]:22", "loopback"),
        ("169.254.1.1:5", "link-local"),
        ("[fe80::1]:5", "link-local"),
        ("[::]:5", "unspecified"),
        ("[::ffff:192.0.2.1]:5", "IPv4-mapped"),
        ("1.2.3.4:0051820", "port"),
        ("1.2.3.4:0", "port"),
        ("1.2.3.4:65536", "port"),
        ("1.2.3.4:\uff11\uff12", "ASCII"),
        ("[1.2.3.4]:5", "IPv6"),
        ("[[::1]]:5", "IPv6"),
        ("2001:db8::1:5", "IPv4:port"),
        ("[2001:DB8::1]:5", "canonical"),
        ("[2001:db8:0::1]:5", "canonical"),
        ("host.example:5", "IPv4:port"),
    ],
)
def test_hostile_endpoints_are_refused(bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_endpoint(bad)


def test_duplicate_endpoints_are_refused() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        EndpointsUpdate(endpoints=["192.0.2.1:5", "192.0.2.1:5"])


@pytest.mark.parametrize(
    ("check", "good"),
    [(check_hostname, "srv1"), (check_username, "bob"), (check_tag, "tag:server")],
)
def test_names_refuse_a_trailing_newline(check: object, good: str) -> None:
    assert check(good) == good  # type: ignore[operator]
    for bad in (good + "\n", good + "\n-2"):
        with pytest.raises(ValueError):
            check(bad)  # type: ignore[operator]
