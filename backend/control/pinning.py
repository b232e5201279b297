"""Join links and certificate pinning.

A join link is `https://HOST:PORT/#fp=sha256:HEX`: HEX is the SHA-256 of the network CA
certificate (DER). The first contact fetches `GET /api/v1/ca` without verification (we have
nothing to verify with yet) and accepts the PEM only if its fingerprint equals HEX; from then on
every call trusts that CA alone, with hostname checking on (`pinned_context`).
"""

from __future__ import annotations

import base64
import hashlib
import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from pcloud.backend.control.reach import describe

_FP_RE = re.compile(r"^fp=sha256:([0-9a-fA-F]{64})$")


class PinningError(Exception):
    """The join link is malformed or the server's CA does not match it."""


@dataclass(frozen=True)
class JoinLink:
    base_url: str  # "https://host:port"
    fingerprint: str  # lowercase hex SHA-256 of the CA certificate (DER)


def parse_join_link(link: str) -> JoinLink:
    parts = urlsplit(link.strip())
    if parts.scheme != "https" or not parts.netloc:
        raise PinningError(f"join link {link!r} must start with https://HOST:PORT/")
    match = _FP_RE.match(parts.fragment)
    if not match:
        raise PinningError(
            f"join link {link!r} lacks the CA fingerprint (#fp=sha256: and 64 hex digits)"
        )
    return JoinLink(f"https://{parts.netloc}", match.group(1).lower())


def base_url(url: str) -> str:
    """`https://host:port/anything#frag` -> `https://host:port`."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def ca_fingerprint(pem: str) -> str:
    try:
        der = ssl.PEM_cert_to_DER_cert(pem)
    except ValueError as e:
        raise PinningError(f"the server's CA is not a PEM certificate: {e}") from None
    return hashlib.sha256(der).hexdigest()


async def fetch_pinned_ca(link: JoinLink, wait_s: float = 10.0) -> str:
    """The network CA as PEM, verified against the join link's fingerprint."""
    # Unverified on purpose: this is how we obtain the CA; the fingerprint check below is
    # what makes it trustworthy.
    async with httpx.AsyncClient(verify=False, timeout=wait_s) as client:
        try:
            answer = await client.get(f"{link.base_url}/api/v1/ca")
        except httpx.HTTPError as e:
            raise PinningError(describe(e, link.base_url)) from None
    if answer.status_code != 200:
        raise PinningError(f"{link.base_url}/api/v1/ca answered {answer.status_code}")
    pem = answer.text
    got = ca_fingerprint(pem)
    if got != link.fingerprint:
        raise PinningError(
            f"fingerprint mismatch: {link.base_url} presents CA sha256:{got}, the join link "
            f"expects sha256:{link.fingerprint}; refusing to talk to it"
        )
    return pem


def pinned_context(ca_pem: str) -> ssl.SSLContext:
    """Trust only the network CA (no system roots); hostname checking stays on."""
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def spki_pin(cert_pem: bytes) -> str:
    """curl's `--pinnedpubkey` value for a certificate (the first in a chain): `sha256//` and
    the base64 SHA-256 of its SubjectPublicKeyInfo."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    spki = (
        x509.load_pem_x509_certificate(cert_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def install_line(base_url: str, pin: str) -> str:
    """The one-line install a new device runs (the server serves /install.sh and packages)."""
    return (
        f"curl -fsSLk --pinnedpubkey {pin} {base_url}/install.sh | sudo sh -s -- --auth-key pk_..."
    )
