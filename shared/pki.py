"""Building X.509 certificates and writing keys (package cryptography), for every CA and leaf.

The network CA and each server's leaf (`pcloud.server.security.tls`), each etcd member's leaf
(`pcloud.shared.etcd.member`) and the K3s stand-in's certificates (tests) are all made by
`issue`: one place that says how a certificate is built, each caller saying only what differs
(names, lifetime, CA or not, key usages).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
# Backdated so a peer whose clock is a little behind accepts a certificate made just now.
BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Issuer:
    """A CA that signs: its certificate and private key."""

    cert: x509.Certificate
    key: Key

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Issuer:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: not an EC private key")
        return cls(x509.load_pem_x509_certificate(cert_path.read_bytes()), key)


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_key(path: Path) -> Key | None:
    """The EC key in `path`, None if there is none (or it is not an EC key)."""
    if not path.exists():
        return None
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def write_private(path: Path, data: bytes) -> None:
    """0600 from the first byte, replaced atomically (a reader never sees half a key)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # an old tmp file keeps its mode through O_CREAT
        f.write(data)
    os.replace(tmp, path)


def sans(names: Iterable[str]) -> list[x509.GeneralName]:
    """Subject alternative names: IP addresses as such, the rest as DNS names; no repeats."""
    out: list[x509.GeneralName] = []
    for n in dict.fromkeys(n for n in names if n):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(
    common_name: str,
    key: Key,
    *,
    days: int,
    issuer: Issuer | None = None,
    ca: bool = False,
    path_length: int | None = None,
    names: Sequence[str] = (),
    usages: Sequence[x509.ObjectIdentifier] = (),
    key_ids: bool = False,
    backdate: dt.timedelta = BACKDATE,
) -> x509.Certificate:
    """A certificate for `key`, signed by `issuer` (self-signed when None).

    `ca`: a CA certificate (BasicConstraints, KeyUsage to sign certificates and CRLs);
    `names`: subject alternative names; `usages`: extended key usages; `key_ids`: the subject
    key identifier on a CA, the authority key identifier on a leaf.
    """
    subject = name(common_name)
    signer = issuer.key if issuer is not None else key
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - backdate)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    )
    if ca:
        builder = builder.add_extension(_ca_usage(), critical=True)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans(names)), critical=False)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if key_ids and ca:
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        builder = builder.add_extension(ski, critical=False)
    elif key_ids:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key())
        builder = builder.add_extension(aki, critical=False)
    return builder.sign(signer, hashes.SHA256())


_KEY_USAGES = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
)  # fmt: skip


def _ca_usage() -> x509.KeyUsage:
    """What the CA key is for: signing certificates and CRLs (and signatures in general)."""
    wanted = {"digital_signature", "key_cert_sign", "crl_sign"}
    return x509.KeyUsage(**{usage: usage in wanted for usage in _KEY_USAGES})
