"""Proof that a caller holds a node's WireGuard private key (DESIGN section 2, "Input is hostile").

Tailscale binds a node key to a machine by Noise; this server does the same job with one NaCl box:

1. The server keeps a long-term X25519 key (`STATE_DIR/node-proof.key`, 0600), and publishes its
   public half with its clock at `GET /api/v1/key` -> `{public_key, time}`.
2. The node seals `protocol.proof_message(purpose, time)` in a `nacl.public.Box` from its
   WireGuard private key (a WireGuard key is an X25519 key) to that public key, with a random
   24-byte nonce, and sends base64(nonce + ciphertext) as `proof`.
3. The server opens it with `Box(server_private, node_public)`. Only the holder of the node's
   private key (or of the server's) can make a box that opens, so it proves possession; the
   purpose must be the request's, the time within `WINDOW_S` of the server's clock, and each nonce
   is accepted once (replay), which the window keeps bounded in memory.

A proof is sealed to one server's key, so under HA a node asks the server it is about to call.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from pathlib import Path

import nacl.exceptions
import nacl.public

from ..errors import ApiError
from ..protocol import PROOF_CONTEXT

KEY_FILE = "node-proof.key"
WINDOW_S = 120
NONCE_LEN = nacl.public.Box.NONCE_SIZE


def invalid(message: str) -> ApiError:
    return ApiError(401, "invalid_proof", message)


def proof_required(what: str) -> ApiError:
    return ApiError(
        403,
        "proof_required",
        f"{what} needs a proof of the node's WireGuard private key (`proof`, see GET /api/v1/key);"
        " update the device's pcloud-backend",
    )


def _load_or_create(path: Path) -> nacl.public.PrivateKey:
    if path.exists():
        raw = base64.b64decode(path.read_text().strip())
        return nacl.public.PrivateKey(raw)
    key = nacl.public.PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(bytes(key)).decode() + "\n")
    os.replace(tmp, path)
    return key


class NodeProofs:
    """The server's proof key and the nonces it has accepted within the window."""

    def __init__(self, state_dir: Path, window_s: int = WINDOW_S) -> None:
        self._key = _load_or_create(state_dir / KEY_FILE)
        self.window_s = window_s
        self._seen: dict[bytes, float] = {}
        self.public_key = base64.b64encode(bytes(self._key.public_key)).decode()

    def verify(self, node_public_key: str, proof: str, purpose: str) -> None:
        """Raise 401 `invalid_proof` unless `proof` proves the private key of
        `node_public_key` for `purpose`, fresh and not seen before."""
        try:
            sealed = base64.b64decode(proof, validate=True)
            peer = nacl.public.PublicKey(base64.b64decode(node_public_key))
            box = nacl.public.Box(self._key, peer)
        except (binascii.Error, ValueError, TypeError, nacl.exceptions.CryptoError):
            raise invalid("proof is not base64 of a NaCl box for this node's key") from None
        if len(sealed) <= NONCE_LEN:
            raise invalid("proof is too short to be a NaCl box")
        nonce = sealed[:NONCE_LEN]
        try:
            message = box.decrypt(sealed).decode()
        except (nacl.exceptions.CryptoError, UnicodeDecodeError, ValueError):
            raise invalid(
                "proof does not open with this node's public key: it was not made with the "
                "node's WireGuard private key for this server's proof key (GET /api/v1/key)"
            ) from None
        context, _, rest = message.partition("\n")
        got_purpose, _, stamp = rest.partition("\n")
        if context != PROOF_CONTEXT or not stamp.isdigit() or not stamp.isascii():
            raise invalid(f"proof message is not a {PROOF_CONTEXT} message")
        if got_purpose != purpose:
            raise invalid(f"proof is for {got_purpose!r}, this request needs {purpose!r}")
        now = time.time()
        if abs(now - int(stamp)) > self.window_s:
            raise invalid(
                f"proof is stale (older than {self.window_s} s by the server's clock): "
                "make a new one with the time from GET /api/v1/key"
            )
        self._forget_old(now)
        if nonce in self._seen:
            raise invalid("proof was already used (replay): make a new one")
        self._seen[nonce] = now

    def _forget_old(self, now: float) -> None:
        # A nonce older than twice the window can never come back in time: drop it.
        if len(self._seen) < 1024:
            return
        cutoff = now - 2 * self.window_s
        for nonce in [n for n, at in self._seen.items() if at < cutoff]:
            del self._seen[nonce]
