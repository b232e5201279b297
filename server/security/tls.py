"""The network's certificate authority and each server's leaf certificate (package cryptography).

At first start a server makes a CA (10 years) and a leaf (2 years) for its listen addresses,
hostname and overlay address. Clients pin the CA by the SHA-256 of its DER encoding, carried in the
join link, so every server of the network can present its own leaf signed by the same CA.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pcloud.shared import pki


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


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's DER encoding, lower-case hex (the join link's `fp`)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def ensure_ca(files: TlsFiles, network_name: str = "PCloud") -> None:
    if files.ca_cert.exists() and files.ca_key.exists():
        return
    key = pki.new_key()
    cert = pki.issue(f"{network_name} network CA", key, days=3650, ca=True, path_length=0,
                     key_ids=True)  # fmt: skip
    pki.write_private(files.ca_key, pki.key_pem(key))
    files.ca_cert.write_bytes(pki.cert_pem(cert))


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
    issuer = pki.Issuer.load(files.ca_cert, files.ca_key)
    # A re-issue (new names) keeps the key: `--pinnedpubkey` lines handed out for the one-line
    # install pin this key, not the certificate.
    key = pki.load_key(files.key) or pki.new_key()
    first = sorted(wanted)[0] if wanted else "pcloud-server"
    cert = pki.issue(first, key, days=730, issuer=issuer, names=sorted(wanted),
                     usages=[pki.SERVER_AUTH], key_ids=True)  # fmt: skip
    pki.write_private(files.key, pki.key_pem(key))
    files.cert.write_bytes(pki.cert_pem(cert) + files.ca_cert.read_bytes())
