"""Random bearer secrets (user tokens, node tokens, auth keys) and their at-rest hashes.

Secrets carry 32 random bytes. They only ever need checking, so the store keeps a SHA-256 of each
(a slow hash buys nothing for 256-bit random values) and the plain value is shown exactly once.
The prefix of a secret says its kind, so one Authorization header can carry either a user token or
an auth key and the server knows which table to look in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

USER_TOKEN = "pcu"
NODE_TOKEN = "pcn"
AUTH_KEY = "pcak"


def new_token(kind: str) -> str:
    return f"{kind}_{secrets.token_urlsafe(32)}"


def new_auth_key() -> tuple[str, str]:
    """A fresh auth key and its public prefix (the part shown in lists)."""
    prefix = secrets.token_hex(6)
    return f"{AUTH_KEY}_{prefix}_{secrets.token_urlsafe(32)}", prefix


def auth_key_prefix(key: str) -> str | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != AUTH_KEY or len(parts[1]) != 12:
        return None
    return parts[1]


def kind_of(secret: str) -> str:
    return secret.split("_", 1)[0]


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_setup_code() -> str:
    """Human-typable one-time code: 4 groups of 4 from an unambiguous alphabet (~80 bits)."""
    alphabet = "23456789abcdefghjkmnpqrstuvwxyz"
    raw = "".join(secrets.choice(alphabet) for _ in range(16))
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))
