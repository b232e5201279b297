"""K3s join tokens: generation, the `K10<ca-hash>::<user>:<password>` format, and parsing.

Facts from K3s's pkg/clientaccess/token.go (see k3s/README.md): the hash is the lower-case hex
SHA-256 of `server/tls/server-ca.crt`; a joining node downloads `/cacerts` and refuses the server
unless the hash matches, which is what makes the full form worth handing out. A bare secret (or
`K10::user:pass`) is accepted without that pinning; the first server is started with a bare secret
because its CA does not exist yet. Token values never go into logs, argv or repr().
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass


class TokenError(ValueError):
    """A token K3s would refuse (the message never contains the secret)."""


@dataclass(frozen=True)
class Token:
    """A parsed token. `ca_hash` is "" when the token does not pin the CA."""

    ca_hash: str
    user: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"Token(ca_hash={self.ca_hash[:12]!r}, user={self.user!r})"


def generate_secret() -> str:
    """A new shared secret: 16 random bytes hex-encoded, as K3s makes when --token is absent."""
    return secrets.token_hex(16)


def ca_hash(ca_pem: bytes) -> str:
    """The hash K3s puts into tokens: SHA-256 of the CA file's bytes."""
    return hashlib.sha256(ca_pem).hexdigest()


def format_token(ca_pem: bytes, password: str, user: str = "server") -> str:
    """The full, CA-pinning form `K10<sha256(ca)>::<user>:<password>`."""
    return f"K10{ca_hash(ca_pem)}::{user}:{password}"


def parse_token(token: str) -> Token:
    """Split a token into CA hash, user and password (bare secrets have neither hash nor user)."""
    token = token.strip()
    if not token:
        raise TokenError("empty token")
    if not token.startswith("K10"):
        return Token("", "", token)
    head, sep, creds = token[3:].partition("::")
    if not sep:
        return Token("", "", token)  # K3s treats a K10 string without '::' as a bare secret
    if len(head) not in (0, 64):
        raise TokenError("invalid token CA hash length")
    user, colon, password = creds.partition(":")
    if not colon:
        user, password = "", creds
    if not password:
        raise TokenError("token has no password")
    return Token(head.lower(), user, password)
