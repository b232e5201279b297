"""Password hashing with argon2id (libsodium through pynacl), so a stolen store reveals nothing."""

from __future__ import annotations

import nacl.exceptions
import nacl.pwhash

# Interactive limits: ~60 ms and 64 MiB per hash on a Pi-class core; enough for a login form.
_OPS = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
_MEM = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE


def hash_password(password: str) -> str:
    return nacl.pwhash.argon2id.str(password.encode(), opslimit=_OPS, memlimit=_MEM).decode()


def verify_password(stored: str, password: str) -> bool:
    try:
        return bool(nacl.pwhash.verify(stored.encode(), password.encode()))
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, ValueError):
        return False


# A hash of a password nobody knows, verified on unknown usernames so that the answer takes the
# same time whether or not the user exists.
DUMMY_HASH = hash_password("pcloud-dummy-password-for-timing")
