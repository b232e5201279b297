"""Keys: encodings, the `wg pubkey` known vector, the key file's permissions, no leaks."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from pcloud.backend import keys

# Recorded with wireguard-tools: `wg genkey > a.key; wg pubkey < a.key`.
WG_PRIVATE = "8BA4p1aJEhnvdI/Gj/+RAzJQZT0L/YK9RJfbJZmnHVQ="
WG_PUBLIC = "fcb6xb+A5KWThMbshuKpI06bAr7OpSUgmAojyXP5KxY="
WG_PRIVATE_HEX = "f01038a756891219ef748fc68fff91033250653d0bfd82bd4497db2599a71d54"


def test_public_from_private_matches_wg_pubkey() -> None:
    assert keys.public_from_private(WG_PRIVATE) == WG_PUBLIC
    assert keys.PrivateKey.from_b64(WG_PRIVATE).public_key() == WG_PUBLIC


def test_hex_round_trip_matches_uapi_form() -> None:
    assert keys.b64_to_hex(WG_PRIVATE) == WG_PRIVATE_HEX
    assert keys.hex_to_b64(WG_PRIVATE_HEX) == WG_PRIVATE
    assert keys.hex_to_b64(WG_PRIVATE_HEX.upper()) == WG_PRIVATE


def test_generated_keys_round_trip() -> None:
    priv, pub = keys.generate_keypair()
    assert keys.decode_key(pub) and len(keys.decode_key(priv.b64())) == 32
    assert keys.encode_key(keys.decode_key(priv.b64())) == priv.b64()
    assert keys.public_from_private(priv.b64()) == pub
    assert keys.hex_to_b64(priv.hex()) == priv.b64()
    assert keys.generate_private_key() != keys.generate_private_key()


@pytest.mark.parametrize(
    "bad",
    ["", "not base64!", base64.b64encode(b"x" * 31).decode(), base64.b64encode(b"x" * 33).decode()],
)
def test_invalid_keys_rejected(bad: str) -> None:
    assert not keys.is_valid_key(bad)
    with pytest.raises(keys.InvalidKeyError):
        keys.decode_key(bad)


def test_invalid_hex_rejected() -> None:
    with pytest.raises(keys.InvalidKeyError):
        keys.hex_to_b64("zz" * 32)
    with pytest.raises(keys.InvalidKeyError):
        keys.hex_to_b64("ab" * 31)


def test_private_key_never_shows_itself() -> None:
    key = keys.PrivateKey.from_b64(WG_PRIVATE)
    for text in (repr(key), str(key), f"{key}", repr([key]), repr({"k": key})):
        assert WG_PRIVATE not in text
        assert WG_PRIVATE_HEX not in text
        assert WG_PUBLIC in text  # the public half identifies it
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(key)


def test_private_key_equality() -> None:
    assert keys.PrivateKey.from_b64(WG_PRIVATE) == keys.PrivateKey.from_b64(WG_PRIVATE)
    assert keys.PrivateKey.from_b64(WG_PRIVATE) != keys.PrivateKey.generate()


def test_load_or_create_private_key_creates_0600_then_reloads(tmp_path: Path) -> None:
    path = tmp_path / "state" / "private.key"
    old = os.umask(0)  # even a permissive umask must not make it readable by others
    try:
        created = keys.load_or_create_private_key(path)
    finally:
        os.umask(old)
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o600
    assert keys.load_or_create_private_key(path) == created
    assert path.read_text().strip() == created.b64()
    assert [p.name for p in path.parent.iterdir()] == ["private.key"]  # no temp file left


def test_load_existing_wg_key(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(WG_PRIVATE + "\n")
    assert keys.load_or_create_private_key(path).public_key() == WG_PUBLIC


def test_key_file_never_world_readable_while_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temp file is created by os.open with mode 0600 (no chmod-after window)."""
    seen: list[int] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        fd = real_open(path, flags, mode)
        if flags & os.O_CREAT:
            seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return fd

    monkeypatch.setattr(os, "open", spy)
    keys.load_or_create_private_key(tmp_path / "k")
    assert seen and all(m & 0o077 == 0 for m in seen)


def test_corrupt_key_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("garbage")
    with pytest.raises(keys.InvalidKeyError):
        keys.load_or_create_private_key(path)


def test_generated_keys_are_clamped_like_wg_genkey() -> None:
    for _ in range(20):
        raw = keys.PrivateKey.generate().raw()
        assert raw[0] & 7 == 0 and raw[31] & 128 == 0 and raw[31] & 64 == 64


def test_same_key_ignores_clamping() -> None:
    unclamped = bytearray(keys.decode_key(WG_PRIVATE))
    unclamped[0] |= 7  # what a non-WireGuard tool might hand us; WireGuard reports it clamped
    a, b = keys.PrivateKey(bytes(unclamped)), keys.PrivateKey.from_b64(WG_PRIVATE)
    assert a != b and a.same_key(b) and not a.same_key(None)
    assert a.public_key() == WG_PUBLIC
