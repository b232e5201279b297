"""Checks of the coordination API's values (DESIGN section 2): keys, names, endpoints, domains,
the regular expressions and limits behind them, and the annotated types the wire models use.

A leaf: only pydantic and the standard library, so the backend can use it without the server.
Each check names what is wrong so the server's 422 answers say what to fix.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

Role = Literal["client", "server"]

# Matched with `fullmatch`: `$` would let a trailing newline through ("srv1\n").
HOSTNAME_RE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
USERNAME_RE = re.compile(r"[a-z][a-z0-9._-]{0,62}")
TAG_RE = re.compile(r"tag:[a-z0-9][a-z0-9-]{0,62}")
PORT_RE = re.compile(r"[1-9][0-9]{0,4}")  # ASCII digits only, no leading zero
MAX_ENDPOINTS = 16
# The owner recorded for server-role nodes (they are owned by `tag:server`, not by a person).
# Reserved: no account may carry this name, so no user credential can ever act as that owner.
INFRA_OWNER = "pcloud"
SERVER_TAG = "tag:server"  # every server-role node carries it (and is owned by it)
RESERVED_USERNAMES = frozenset({INFRA_OWNER})

# Proof of possession of a node's WireGuard private key (see `proof_message`).
PROOF_CONTEXT = "pcloud-node-proof-v1"
ProofPurpose = Literal["register", "rotate", "promote", "renew", "relay"]


def proof_message(purpose: str, timestamp: int) -> bytes:
    """The plaintext a node seals in a NaCl box from its WireGuard private key to the server's
    proof key (`GET /api/v1/key`): the purpose binds a proof to one kind of request and the
    timestamp (the server's clock, as `GET /key` reported it) bounds its life. Only the holder of
    the node's private key (or the server) can make a box the server opens with that node's
    public key, so a valid box proves possession of the key."""
    return f"{PROOF_CONTEXT}\n{purpose}\n{int(timestamp)}".encode()


# Curve25519 points of small order (u-coordinates, little-endian, bit 255 cleared), the list
# libsodium refuses in crypto_scalarmult (`has_small_order`): 0, 1, the two points of order 8,
# and p-1, p, p+1. A "public key" that is one of these gives every peer a predictable shared
# secret, so it is never a real device's key.
_P = 2**255 - 19
LOW_ORDER_POINTS = frozenset(
    u.to_bytes(32, "little")
    for u in (
        0,
        1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
        _P - 1,
        _P,
        _P + 1,
    )
)
# The network's DNS domain when the server is given none: under `.internal`, the top-level
# domain reserved for private use (ICANN, 2024), so it never shadows a public name.
DEFAULT_DOMAIN = "pcloud.internal"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DOMAIN_RE = re.compile(rf"(?=.{{1,200}}\Z){_LABEL}(?:\.{_LABEL})*")
_NOT_LABEL_CHARS = re.compile(r"[^a-z0-9-]+")


def check_public_key(value: str) -> str:
    """A WireGuard public key: standard base64 of 32 bytes that encode a usable Curve25519 point.

    Returned in its one canonical spelling (DESIGN section 2: other spellings of the same bytes
    are the same key), so every later comparison and index sees one string per key. The last
    base64 character carries two padding bits `b64decode` ignores, hence four spellings.
    """
    if len(value) != 44 or not value.isascii() or not value.endswith("="):
        raise ValueError("public_key must be 44 characters of base64 (a 32-byte WireGuard key)")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("public_key is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"public_key decodes to {len(raw)} bytes, a WireGuard key has 32")
    # X25519 ignores bit 255, so with it set these are the same points (libsodium masks it too).
    if raw[:31] + bytes([raw[31] & 0x7F]) in LOW_ORDER_POINTS:
        raise ValueError(
            "public_key is a low-order Curve25519 point (e.g. all zeros), not a device's key"
        )
    return base64.b64encode(raw).decode("ascii")


def check_hostname(value: str) -> str:
    """A DNS label: lower-case letters, digits and dashes, 1-63 characters."""
    if not HOSTNAME_RE.fullmatch(value):
        raise ValueError(
            "hostname must be 1-63 lower-case letters, digits or dashes, not starting or "
            "ending with a dash"
        )
    return value


def dns_label(name: str, fallback: str = "device") -> str:
    """A device name as a DNS label, the one normalisation used by server, backend and CLI:
    lower-case, every run of other characters than a-z, 0-9 and '-' becomes one '-', no dash at
    either end, at most 63 characters; `fallback` when nothing is left. `My_Laptop.lan` ->
    `my-laptop-lan`. A valid label is returned unchanged, so hostnames the server accepted keep
    their (already unique) spelling as DNS names."""
    label = _NOT_LABEL_CHARS.sub("-", name.lower()).strip("-")[:63].rstrip("-")
    return label or fallback


def check_domain(value: str) -> str:
    """The network's DNS domain: dot-separated DNS labels (lower-case), at most 200 characters."""
    if not DOMAIN_RE.fullmatch(value):
        raise ValueError(
            f"domain {value!r} must be dot-separated labels of lower-case letters, digits and "
            "dashes (e.g. pcloud.internal), at most 200 characters"
        )
    return value


def check_username(value: str) -> str:
    if not USERNAME_RE.fullmatch(value):
        raise ValueError(
            "username must start with a lower-case letter and hold at most 63 letters, "
            "digits, '.', '_' or '-'"
        )
    if value in RESERVED_USERNAMES:
        raise ValueError(f"username {value!r} is reserved (it owns the network's servers)")
    return value


_V4_THIS_NET = ipaddress.IPv4Network("0.0.0.0/8")  # "this network", never a destination


def _endpoint_ip_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why `ip` is no address a peer should send WireGuard packets to, or None."""
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_loopback:
        return "a loopback address (peers would send to themselves)"
    if ip.is_link_local:
        return "a link-local address (it needs a zone, which endpoints may not carry)"
    if ip.version == 4 and (ip in _V4_THIS_NET or ip.is_reserved):
        return "a reserved or broadcast address"
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address (send it as IPv4)"
    return None


# Addresses that exist only behind a NAT (RFC 1918, carrier-grade NAT, IPv6 unique local).
# Python's `is_private` also counts the documentation ranges, which the lab uses as the internet.
LAN_RANGES = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


def is_lan_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for an address that is only reachable inside some private network."""
    return any(ip in net for net in LAN_RANGES)


def public_host(url: str) -> str:
    """The host of a `--public-url` (https://HOST:PORT, no path); ValueError names the problem."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme != "https" or not parts.hostname or port == -1 or parts.path not in ("", "/"):
        raise ValueError(f"--public-url {url!r} must be https://HOST[:PORT] with no path")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"--public-url {url!r} must be https://HOST[:PORT] with no path")
    return parts.hostname


def check_endpoint(value: str) -> str:
    """A WireGuard endpoint in its one canonical text: `IPv4:port` or `[IPv6]:port`.

    Endpoints travel verbatim into every peer's WireGuard configuration, so anything but the
    canonical form (what `ipaddress` prints, ASCII digits, no zone, no leading zeros) is refused
    rather than repaired: a zone id could carry a newline into wireguard-go's UAPI.
    """
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"endpoint {value!r} must be printable ASCII ip:port")
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ValueError(f"endpoint {value!r} must be ip:port")
    if not PORT_RE.fullmatch(port) or int(port) > 65535:
        raise ValueError(f"endpoint {value!r} has no valid port (1-65535, no leading zeros)")
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        if "%" in inner:
            raise ValueError(f"endpoint {value!r} has an IPv6 zone id; endpoints may not")
        try:
            ip = ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError(f"endpoint {value!r} must be [IPv6]:port inside brackets") from None
        canonical = f"[{ip}]:{port}"
    else:
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(
                f"endpoint {value!r} must be IPv4:port or [IPv6]:port (numeric, no names)"
            ) from None
        canonical = f"{ip}:{port}"
    problem = _endpoint_ip_problem(ip)
    if problem is not None:
        raise ValueError(f"endpoint {value!r} is {problem}")
    if canonical != value:
        raise ValueError(f"endpoint {value!r} is not in canonical form: send {canonical!r}")
    return value


def check_endpoint_list(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"endpoint {value!r} is listed twice")
        seen.add(value)
    return values


def check_tag(value: str) -> str:
    if not TAG_RE.fullmatch(value):
        raise ValueError(f"tag {value!r} must look like tag:name (lower-case, digits, dashes)")
    return value


PublicKey = Annotated[str, AfterValidator(check_public_key)]
Hostname = Annotated[str, AfterValidator(check_hostname)]
Username = Annotated[str, AfterValidator(check_username)]
Endpoint = Annotated[str, AfterValidator(check_endpoint)]
Tag = Annotated[str, AfterValidator(check_tag)]
# Canonical endpoints are compared as text, so "listed twice" is exact.
Endpoints = Annotated[
    list[Endpoint], Field(max_length=MAX_ENDPOINTS), AfterValidator(check_endpoint_list)
]
Password = Annotated[str, Field(min_length=8, max_length=1024)]
# base64 of a NaCl box (24-byte nonce, 16-byte tag, a short message): well under 200 characters.
Proof = Annotated[str, Field(min_length=1, max_length=256)]
