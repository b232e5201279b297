"""WireGuard key pairs: generation (X25519 via PyNaCl), the base64 and hex encodings WireGuard
uses, and the device's private key file.

Keys travel as WireGuard base64 strings (what `wg genkey`/`wg pubkey` print and what the wire
protocol carries); the UAPI of wireguard-go wants the same 32 bytes as lowercase hex. The private
key is wrapped in `PrivateKey` so that printing or logging it by accident shows nothing secret.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from pathlib import Path

from nacl.public import PrivateKey as _NaclPrivateKey

KEY_LEN = 32


class InvalidKeyError(ValueError):
    """A key is not 32 bytes of valid base64/hex."""


def decode_key(b64: str) -> bytes:
    """WireGuard base64 -> 32 raw bytes; raises InvalidKeyError otherwise."""
    try:
        raw = base64.b64decode(b64.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidKeyError("key is not valid base64") from exc
    if len(raw) != KEY_LEN:
        raise InvalidKeyError(f"key must be {KEY_LEN} bytes, got {len(raw)}")
    return raw


def encode_key(raw: bytes) -> str:
    """32 raw bytes -> WireGuard base64 (44 characters, one '=' of padding)."""
    if len(raw) != KEY_LEN:
        raise InvalidKeyError(f"key must be {KEY_LEN} bytes, got {len(raw)}")
    return base64.b64encode(raw).decode("ascii")


def b64_to_hex(b64: str) -> str:
    """WireGuard base64 -> lowercase hex, the form the UAPI protocol uses."""
    return decode_key(b64).hex()


def hex_to_b64(hex_key: str) -> str:
    """UAPI hex -> WireGuard base64."""
    try:
        raw = bytes.fromhex(hex_key.strip())
    except ValueError as exc:
        raise InvalidKeyError("key is not valid hex") from exc
    return encode_key(raw)


def is_valid_key(b64: str) -> bool:
    """True when `b64` decodes to exactly 32 bytes."""
    try:
        decode_key(b64)
    except InvalidKeyError:
        return False
    return True


class PrivateKey:
    """A WireGuard private key that never shows itself in repr/str (so it cannot reach a log
    line or a traceback by accident). Read it deliberately with `.b64()` or `.raw()`."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_LEN:
            raise InvalidKeyError(f"key must be {KEY_LEN} bytes, got {len(raw)}")
        # Stored as given: X25519 clamps on use, so clamped and unclamped forms are the same key.
        self._raw = bytes(raw)

    @classmethod
    def generate(cls) -> PrivateKey:
        """A new key, clamped like `wg genkey` does, so it is byte for byte what WireGuard
        reports back (WireGuard clamps the key it is given and returns the clamped form)."""
        raw = bytearray(bytes(_NaclPrivateKey.generate()))
        raw[0] &= 248
        raw[31] = (raw[31] & 127) | 64
        return cls(bytes(raw))

    def same_key(self, other: PrivateKey | None) -> bool:
        """Whether `other` is the same X25519 key, clamped or not (compares public keys)."""
        return other is not None and other.public_key() == self.public_key()

    @classmethod
    def from_b64(cls, b64: str) -> PrivateKey:
        return cls(decode_key(b64))

    def raw(self) -> bytes:
        return self._raw

    def b64(self) -> str:
        return encode_key(self._raw)

    def hex(self) -> str:
        return self._raw.hex()

    def public_key(self) -> str:
        """The matching public key, WireGuard base64."""
        return encode_key(bytes(_NaclPrivateKey(self._raw).public_key))

    def __repr__(self) -> str:
        return f"PrivateKey(public={self.public_key()})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivateKey):
            return NotImplemented
        return self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __reduce__(self) -> tuple[object, ...]:
        # Refuse pickling: a pickled key ends up in caches and crash dumps.
        raise TypeError("PrivateKey is not picklable")


def generate_private_key() -> str:
    """A fresh private key, WireGuard base64 (like `wg genkey`)."""
    return PrivateKey.generate().b64()


def public_from_private(private_b64: str) -> str:
    """Public key for a base64 private key (like `wg pubkey`)."""
    return PrivateKey.from_b64(private_b64).public_key()


def generate_keypair() -> tuple[PrivateKey, str]:
    """(private key, public key as base64)."""
    key = PrivateKey.generate()
    return key, key.public_key()


def load_or_create_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    """Read the device key from `path`, or create one there.

    The file is written next to its final place with mode 0600 from the moment it exists
    (os.open with the mode, not chmod afterwards) and renamed into place, so the key is never
    world-readable and a crash never leaves a half-written key behind.
    """
    target = Path(path)
    try:
        return PrivateKey.from_b64(target.read_text(encoding="ascii"))
    except FileNotFoundError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = PrivateKey.generate()
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        # The umask can only remove bits, but an odd umask must not make it stricter than
        # owner read/write either: the backend has to read it back.
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            fd = -1
            f.write(key.b64() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return key
