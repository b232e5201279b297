"""The network's certificate authority and each server's leaf certificate (package cryptography).

At first start a server makes a CA (10 years) and a leaf (2 years) for its listen addresses,
hostname and overlay address. Clients pin the CA by the SHA-256 of its DER encoding, carried in the
join link, so every server of the network can present its own leaf signed by the same CA.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    cert: Path  # leaf followed by the CA, as served
    key: Path

    @classmethod
    def in_dir(cls, state_dir: Path) -> TlsFiles:
        tls = state_dir / "tls"
        return cls(tls / "ca.pem", tls / "ca.key", tls / "server.pem", tls / "server.key")


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's DER encoding, lower-case hex (the join link's `fp`)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def ensure_ca(files: TlsFiles, network_name: str = "PCloud") -> None:
    if files.ca_cert.exists() and files.ca_key.exists():
        return
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{network_name} network CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(files.ca_key, _key_pem(key))
    files.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _sans(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for n in names:
        if not n or n in seen:
            continue
        seen.add(n)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def leaf_names(files: TlsFiles) -> set[str]:
    """The SAN entries of the current leaf (empty if there is none)."""
    if not files.cert.exists():
        return set()
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    names = {str(v) for v in ext.get_values_for_type(x509.IPAddress)}
    names |= set(ext.get_values_for_type(x509.DNSName))
    return names


def _existing_key(files: TlsFiles) -> ec.EllipticCurvePrivateKey | None:
    if not files.key.exists():
        return None
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def spki_pin(cert_pem: bytes) -> str:
    """curl's `--pinnedpubkey` form of a certificate's key: `sha256//` + base64 of the SHA-256 of
    its SubjectPublicKeyInfo (DER). For a chain, the first certificate (the leaf) counts."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def ensure_leaf(files: TlsFiles, names: list[str]) -> None:
    """Issue a leaf for `names` unless the current one already covers them all."""
    wanted = {n for n in names if n}
    if files.key.exists() and wanted <= leaf_names(files):
        return
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    # A re-issue (new names) keeps the key: `--pinnedpubkey` lines handed out for the one-line
    # install pin this key, not the certificate.
    key = _existing_key(files) or ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    first = sorted(wanted)[0] if wanted else "pcloud-server"
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=730))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_sans(sorted(wanted))), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(files.key, _key_pem(key))
    chain = cert.public_bytes(serialization.Encoding.PEM) + files.ca_cert.read_bytes()
    files.cert.write_bytes(chain)
