"""The wireguard-go UAPI text protocol, encode and parse only (no I/O).

A request is `get=1` or `set=1` followed by `key=value` lines and an empty line; the answer to
`get=1` is the device's `key=value` lines, and every answer ends with `errno=N` and an empty
line (wireguard-go sends negative errno values, e.g. `errno=-22` for EINVAL). Keys are 64 hex
characters on this protocol, base64 everywhere else in PCloud. Reference:
https://www.wireguard.com/xplatform/#configuration-protocol
"""

from __future__ import annotations

from datetime import UTC, datetime

from pcloud.backend.keys import InvalidKeyError, PrivateKey, b64_to_hex, hex_to_b64
from pcloud.backend.wg.diff import ConfigDiff, DeviceState, PeerState
from pcloud.backend.wg.driver import DriverError

GET_REQUEST = b"get=1\n\n"


class UapiError(DriverError):
    """wireguard-go answered with a non-zero errno."""

    def __init__(self, errno: int, op: str) -> None:
        self.errno = errno
        super().__init__(f"wireguard-go refused {op} (errno={errno})")


def _split_response(text: str, op: str) -> list[tuple[str, str]]:
    """key/value pairs before the final errno line; raises on a non-zero errno or a truncated
    answer (wireguard-go closes the connection without an errno on an unknown operation)."""
    pairs: list[tuple[str, str]] = []
    errno: int | None = None
    for line in text.split("\n"):
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise DriverError(f"malformed UAPI line in {op} answer: {line[:40]!r}")
        if key == "errno":
            try:
                errno = int(value)
            except ValueError:
                raise DriverError(f"malformed errno in {op} answer: {value[:20]!r}") from None
            break
        pairs.append((key, value))
    if errno is None:
        raise DriverError(f"wireguard-go closed the UAPI connection without an answer to {op}")
    if errno != 0:
        raise UapiError(errno, op)
    return pairs


def parse_errno(text: str, op: str = "set") -> None:
    """Check the answer to a `set=1`: returns when errno=0, raises UapiError otherwise."""
    _split_response(text, op)


def _int(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DriverError(f"UAPI {key} is not a number: {value[:20]!r}") from None


def _key(key: str, value: str) -> str:
    try:
        return hex_to_b64(value)
    except InvalidKeyError:
        raise DriverError(f"UAPI {key} is not a 32-byte hex key") from None


class _PeerBuilder:
    def __init__(self, public_key: str) -> None:
        self.public_key = public_key
        self.endpoint: str | None = None
        self.allowed_ips: list[str] = []
        self.keepalive = 0
        self.hs_sec = 0
        self.hs_nsec = 0
        self.rx = 0
        self.tx = 0

    def build(self) -> PeerState:
        handshake = None
        if self.hs_sec or self.hs_nsec:
            handshake = datetime.fromtimestamp(self.hs_sec + self.hs_nsec / 1e9, tz=UTC)
        return PeerState(
            public_key=self.public_key,
            endpoint=self.endpoint,
            allowed_ips=tuple(self.allowed_ips),
            persistent_keepalive=self.keepalive,
            last_handshake=handshake,
            rx_bytes=self.rx,
            tx_bytes=self.tx,
        )


def parse_get(text: str) -> DeviceState:
    """Parse the answer to `get=1` into a DeviceState. Unknown keys are ignored so a newer
    wireguard-go does not break us; a private key of all zeros means none is set."""
    private_key: PrivateKey | None = None
    listen_port = 0
    fwmark = 0
    peers: list[PeerState] = []
    cur: _PeerBuilder | None = None
    for key, value in _split_response(text, "get"):
        if key == "public_key":
            if cur is not None:
                peers.append(cur.build())
            cur = _PeerBuilder(_key(key, value))
        elif cur is None:
            if key == "private_key":
                try:
                    raw = bytes.fromhex(value)
                except ValueError:
                    raw = b""
                if len(raw) != 32:
                    raise DriverError("UAPI private_key is not a 32-byte hex key")
                private_key = PrivateKey(raw) if any(raw) else None
            elif key == "listen_port":
                listen_port = _int(key, value)
            elif key == "fwmark":
                fwmark = _int(key, value)
        elif key == "endpoint":
            cur.endpoint = value or None
        elif key == "allowed_ip":
            cur.allowed_ips.append(value)
        elif key == "persistent_keepalive_interval":
            cur.keepalive = _int(key, value)
        elif key == "last_handshake_time_sec":
            cur.hs_sec = _int(key, value)
        elif key == "last_handshake_time_nsec":
            cur.hs_nsec = _int(key, value)
        elif key == "rx_bytes":
            cur.rx = _int(key, value)
        elif key == "tx_bytes":
            cur.tx = _int(key, value)
    if cur is not None:
        peers.append(cur.build())
    return DeviceState(
        private_key=private_key, listen_port=listen_port, fwmark=fwmark, peers=tuple(peers)
    )


def _line(key: str, value: object) -> str:
    """One `key=value` line. A value holding a newline or `=` (or anything but printable ASCII)
    would smuggle further keys into the transaction, e.g. `remove=true` for another peer: the
    whole `set` is refused instead."""
    text = str(value)
    if not text.isascii() or not text.isprintable() or "=" in text:
        raise DriverError(f"refusing UAPI {key} value {text[:80]!r}: not a plain value")
    return f"{key}={text}"


def encode_set(change: ConfigDiff, *, replace_peers: bool = False) -> bytes:
    """One `set=1` transaction for `change`. Existing peers are addressed with `update_only`
    so that a peer removed meanwhile is not re-created half-configured. Every value is checked
    by `_line`, so no value can end its line early."""
    lines = ["set=1"]
    if change.private_key is not None:
        lines.append(_line("private_key", change.private_key.hex()))
    if change.listen_port is not None:
        lines.append(_line("listen_port", change.listen_port))
    if replace_peers:
        lines.append("replace_peers=true")
    for op in change.peers:
        try:
            lines.append(_line("public_key", b64_to_hex(op.public_key)))
        except InvalidKeyError:
            raise DriverError(f"refusing UAPI public_key {op.public_key[:60]!r}") from None
        if op.action == "remove":
            lines.append("remove=true")
            continue
        if op.action == "update":
            lines.append("update_only=true")
        if op.endpoint is not None:
            lines.append(_line("endpoint", op.endpoint))
        if op.persistent_keepalive is not None:
            lines.append(_line("persistent_keepalive_interval", op.persistent_keepalive))
        if op.allowed_ips is not None:
            lines.append("replace_allowed_ips=true")
            lines.extend(_line("allowed_ip", cidr) for cidr in op.allowed_ips)
    return ("\n".join(lines) + "\n\n").encode("ascii")
