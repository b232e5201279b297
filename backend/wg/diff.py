"""What WireGuard has now versus what the backend wants: the smallest set of changes.

Pure code, shared by both drivers: each driver reads the interface into a `DeviceState`, calls
`diff()` with the desired `InterfaceConfig`, and turns the resulting `ConfigDiff` into one UAPI
`set=1` transaction (userspace) or netlink messages (kernel). Peers that did not change are not
touched, so their sessions and handshakes survive every apply (DESIGN section 4).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pcloud.backend.keys import InvalidKeyError, PrivateKey, decode_key, encode_key
from pcloud.backend.wg.driver import DriverError, InterfaceConfig, PeerConfig, PeerStats


@dataclass(frozen=True)
class PeerState:
    """One peer as the interface reports it."""

    public_key: str  # base64
    endpoint: str | None = None
    allowed_ips: tuple[str, ...] = ()
    persistent_keepalive: int = 0  # 0 = off
    last_handshake: datetime | None = None
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass(frozen=True)
class DeviceState:
    """The interface as WireGuard reports it. `private_key` is wrapped so a repr of this object
    (e.g. in a test failure or a debug log) never shows the key."""

    private_key: PrivateKey | None = None
    listen_port: int = 0
    fwmark: int = 0
    peers: tuple[PeerState, ...] = ()

    def peer(self, public_key: str) -> PeerState | None:
        for p in self.peers:
            if p.public_key == public_key:
                return p
        return None

    def stats(self) -> list[PeerStats]:
        return [
            PeerStats(
                public_key=p.public_key,
                endpoint=p.endpoint,
                last_handshake=p.last_handshake,
                rx_bytes=p.rx_bytes,
                tx_bytes=p.tx_bytes,
            )
            for p in self.peers
        ]


@dataclass(frozen=True)
class PeerOp:
    """One peer change. For "add" every field that is not None is set; for "update" only the
    fields that are not None changed (allowed_ips, when given, replaces the whole list)."""

    action: Literal["add", "update", "remove"]
    public_key: str
    endpoint: str | None = None
    persistent_keepalive: int | None = None
    allowed_ips: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ConfigDiff:
    private_key: PrivateKey | None = None  # set when not None
    listen_port: int | None = None  # set when not None
    peers: tuple[PeerOp, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return self.private_key is None and self.listen_port is None and not self.peers


def normalize_key(b64: str) -> str:
    """Canonical base64 form of a key, so equal keys compare equal as strings."""
    try:
        return encode_key(decode_key(b64))
    except InvalidKeyError as exc:
        raise DriverError(f"invalid WireGuard key: {exc}") from None


# Everything an `ip:port` / `[v6]:port` can hold. Endpoints come from the netmap (other nodes'
# reports), so a zone id (`%eth0`), a space or a newline must never reach WireGuard.
_ENDPOINT_CHARS = frozenset("0123456789abcdefABCDEF.:[]")


def normalize_endpoint(endpoint: str) -> str:
    """'ip:port' / '[v6]:port' in the one form WireGuard prints; DriverError when it is not a
    numeric address and port (WireGuard does not resolve names), carries a zone id or any
    other character, or names no unicast destination."""
    shown = endpoint[:80]  # netmap data: never echo an unbounded string into logs and status
    if not endpoint or not set(endpoint) <= _ENDPOINT_CHARS:
        raise DriverError(f"endpoint {shown!r} is not a plain numeric ip:port")
    host, sep, port_s = endpoint.rpartition(":")
    if not sep or not port_s.isdigit() or len(port_s) > 5:
        raise DriverError(f"endpoint {shown!r} has no valid port")
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address
    try:
        if host.startswith("[") and host.endswith("]"):
            addr = ipaddress.IPv6Address(host[1:-1])
        else:
            addr = ipaddress.IPv4Address(host)
    except ValueError:
        raise DriverError(f"endpoint {shown!r} is not a numeric ip:port") from None
    port = int(port_s)
    if not 0 < port < 65536:
        raise DriverError(f"endpoint {shown!r} has an invalid port")
    if addr.version == 6:
        # WireGuard prints a v4-mapped v6 endpoint as plain v4; do the same so it compares equal.
        mapped = addr.ipv4_mapped
        if mapped is not None:
            addr = mapped
    if addr.is_unspecified or addr.is_multicast or (addr.version == 4 and addr.is_reserved):
        raise DriverError(f"endpoint {shown!r} is not a unicast address")
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def _same_endpoint(current: str, wanted: str) -> bool:
    """Whether WireGuard's endpoint `current` is `wanted` (already normalised). `current` is
    what WireGuard learnt, possibly from a roaming peer (wireguard-go prints a link-local
    source with its zone): one we cannot parse is simply not the wanted one."""
    try:
        return normalize_endpoint(current) == wanted
    except DriverError:
        return False


def normalize_allowed_ips(cidrs: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Sorted, deduplicated networks with host bits cleared (how WireGuard stores them)."""
    try:
        nets = {ipaddress.ip_network(c.strip(), strict=False) for c in cidrs}
    except ValueError as exc:
        raise DriverError(f"invalid allowed IP: {exc}") from None
    return tuple(str(n) for n in sorted(nets, key=lambda n: (n.version, n)))


def _keepalive(value: int | None) -> int:
    return value or 0


def _peer_add(p: PeerConfig) -> PeerOp:
    return PeerOp(
        action="add",
        public_key=normalize_key(p.public_key),
        endpoint=normalize_endpoint(p.endpoint) if p.endpoint else None,
        persistent_keepalive=_keepalive(p.persistent_keepalive) or None,
        allowed_ips=normalize_allowed_ips(p.allowed_ips),
    )


def _peer_update(cur: PeerState, want: PeerConfig, known: bool, was: str | None) -> PeerOp | None:
    endpoint: str | None = None
    if want.endpoint:
        # A peer with no endpoint wanted keeps the one WireGuard learned from it by roaming:
        # there is no "unset endpoint" and overwriting it would break a working tunnel.
        ep = normalize_endpoint(want.endpoint)
        if cur.endpoint is None:
            endpoint = ep
        elif known:
            # Set only when what we want changed: WireGuard roams to wherever the peer's
            # authenticated packets come from (a NAT's public side), and setting the same
            # wanted endpoint again would undo that on every re-apply. A peer we applied
            # without an endpoint that has one now reached us from there: kept too.
            endpoint = ep if was is not None and was != ep else None
        elif not _same_endpoint(cur.endpoint, ep):
            endpoint = ep  # nothing set by us yet (e.g. an adopted interface): compare
    keepalive: int | None = None
    if _keepalive(want.persistent_keepalive) != cur.persistent_keepalive:
        keepalive = _keepalive(want.persistent_keepalive)
    allowed: tuple[str, ...] | None = None
    want_ips = normalize_allowed_ips(want.allowed_ips)
    if want_ips != normalize_allowed_ips(cur.allowed_ips):
        allowed = want_ips
    if endpoint is None and keepalive is None and allowed is None:
        return None
    return PeerOp(
        action="update",
        public_key=cur.public_key,
        endpoint=endpoint,
        persistent_keepalive=keepalive,
        allowed_ips=allowed,
    )


def diff(
    current: DeviceState,
    desired: InterfaceConfig,
    applied: Mapping[str, str | None] | None = None,
    tries: Mapping[str, int] | None = None,
) -> ConfigDiff:
    """The changes that turn `current` into `desired`: private key and listen port only when they
    differ (None listen port = keep whatever is bound), then removals, updates and additions.
    `applied` is what `applied_endpoints` gave for the last config applied: a peer's endpoint is
    set only when the wanted one differs from it (WireGuard's own, learned by roaming, is kept);
    a peer not in it is compared with WireGuard's endpoint. `tries` is what `applied_tries` gave
    for that config: a sessionless peer whose `handshake_try` changed is set afresh."""
    want_key = PrivateKey.from_b64(desired.private_key) if desired.private_key else None
    if want_key is None:
        raise DriverError("the interface config has no private key")
    # Compared as keys, not bytes: WireGuard reports the private key clamped.
    private_key = None if want_key.same_key(current.private_key) else want_key

    listen_port = None
    if desired.listen_port is not None and desired.listen_port != current.listen_port:
        listen_port = desired.listen_port

    wanted: dict[str, PeerConfig] = {}
    for p in desired.peers:
        k = normalize_key(p.public_key)
        if k in wanted:
            raise DriverError(f"peer {k} is listed twice")
        if k == want_key.public_key():
            # WireGuard silently drops a peer with the interface's own public key.
            raise DriverError(f"peer {k} is this interface itself")
        wanted[k] = p
    have = {normalize_key(p.public_key): p for p in current.peers}

    ops: list[PeerOp] = []
    last = applied or {}
    # Removals first, so a new peer's allowed IPs taken over from a removed one end up with the
    # new peer (WireGuard moves an allowed IP to the last peer that claims it).
    for k in sorted(have.keys() - wanted.keys()):
        ops.append(PeerOp(action="remove", public_key=k))
    for k, want in wanted.items():
        cur = have.get(k)
        if cur is None:
            ops.append(_peer_add(want))
            continue
        op = _peer_update(cur, want, k in last, last.get(k))
        if private_key is not None and current.private_key is not None:
            # A new key of ours (a login as a new node on an interface kept from the old one):
            # every session and its handshake time belong to the old key. Set afresh, the
            # peers shake hands at once and their stats say nothing stale (the relay and the
            # endpoint selector took the old handshakes for live direct paths).
            ops += [PeerOp(action="remove", public_key=k), _peer_add(want)]
        elif cur.last_handshake is None and (
            (op is not None and op.endpoint is not None)
            or (tries is not None and want.handshake_try != tries.get(k, 0))
        ):
            # No session yet, and WireGuard sends no new initiation within 5 s (REKEY_TIMEOUT)
            # of its last one, which went to the old endpoint or to none, or reached a peer
            # that did not know us yet (a node that just logged in): the first handshake
            # across a NAT would wait out that retry. A peer set afresh initiates at once
            # (its persistent keepalive), to the endpoint that is now known. So does a peer
            # whose handshake try was raised (RelayPaths: the first one went unanswered).
            ops += [PeerOp(action="remove", public_key=k), _peer_add(want)]
        elif op is not None:
            ops.append(op)
    return ConfigDiff(private_key=private_key, listen_port=listen_port, peers=tuple(ops))


def applied_endpoints(desired: InterfaceConfig) -> dict[str, str | None]:
    """Peer key -> the endpoint `desired` wants (normalised; None: none): what a driver
    remembers once it applied `desired`, for the next `diff`."""
    return {
        normalize_key(p.public_key): normalize_endpoint(p.endpoint) if p.endpoint else None
        for p in desired.peers
    }


def applied_tries(desired: InterfaceConfig) -> dict[str, int]:
    """Peer key -> its `handshake_try` in `desired`: what a driver remembers for the next `diff`."""
    return {normalize_key(p.public_key): p.handshake_try for p in desired.peers}
