"""The "what is my address" UDP echo's wire format (DESIGN section 9), shared by pcloud-server
(which answers) and the backend (which asks, to tell its NAT's kind).

A request is `MAGIC`, a 16-byte nonce, then zero padding up to `REQUEST_SIZE` bytes. The answer
is `MAGIC`, the same nonce, then the source address the server saw, as `ip:port` text. Answers are
never longer than their request and anything else gets no answer at all, so the echo cannot be
used to amplify traffic towards a forged source address.

Every server answers on both `ECHO_PORTS`: a NAT that maps one socket to different public ports
for different destinations (endpoint-dependent, "symmetric") shows two different addresses.
"""

from __future__ import annotations

MAGIC = b"PCLOUD-REACH-1\n"
NONCE_SIZE = 16
REQUEST_SIZE = 96  # room for the longest answer: "[IPv6]:port" is at most 47 characters
# Two UDP ports of their own (not the HTTPS port number, whose UDP side carries the relay).
ECHO_PORTS = (8478, 8479)


def echo_request(nonce: bytes) -> bytes:
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"the nonce must be {NONCE_SIZE} bytes")
    return (MAGIC + nonce).ljust(REQUEST_SIZE, b"\0")


def echo_answer(request: bytes, source: tuple[str, int]) -> bytes | None:
    """The answer to `request` from `source` (host, port), or None for anything not a request."""
    if len(request) != REQUEST_SIZE or not request.startswith(MAGIC):
        return None
    nonce = request[len(MAGIC) : len(MAGIC) + NONCE_SIZE]
    host, port = source[0], source[1]
    seen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    answer = MAGIC + nonce + seen.encode()
    return answer if len(answer) <= len(request) else None


def parse_echo_answer(answer: bytes, nonce: bytes) -> str | None:
    """The `ip:port` an answer carries, or None when it is not the answer to `nonce`."""
    head = MAGIC + nonce
    if not answer.startswith(head) or len(answer) > REQUEST_SIZE:
        return None
    try:
        text = answer[len(head) :].decode("ascii")
    except UnicodeDecodeError:
        return None
    host, sep, port = text.rpartition(":")
    return text if sep and host and port.isdigit() else None
