"""Proof of possession of this device's WireGuard private key, for the coordination server.

The server publishes an X25519 key and its clock (`GET /api/v1/key`); we seal
`protocol.proof_message(purpose, server_time)` in a NaCl box from our WireGuard private key (an
X25519 key) to it. Only the holder of our private key can make a box the server opens with our
public key, and the purpose, the timestamp and the box's random nonce keep a proof from being
used for another request, later, or twice (server.security.nodeproof checks all three). The
private key never leaves the device.
"""

from __future__ import annotations

import base64

import nacl.public

from pcloud.backend.keys import PrivateKey
from pcloud.server.protocol import ProofPurpose, ServerKey, proof_message


def make_proof(key: PrivateKey, server: ServerKey, purpose: ProofPurpose) -> str:
    box = nacl.public.Box(
        nacl.public.PrivateKey(key.raw()),
        nacl.public.PublicKey(base64.b64decode(server.public_key)),
    )
    sealed = box.encrypt(proof_message(purpose, server.time))  # random nonce, prepended
    return base64.b64encode(bytes(sealed)).decode()
