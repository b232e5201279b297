"""The stand-in's certificates: a cluster CA shared by all servers and a serving cert per node.

Like K3s, the CA lives in DATA_DIR/server/tls/server-ca.crt (its SHA-256 is the hash inside
tokens), and the serving certificate names the node name, the node IPs, 127.0.0.1, ::1,
localhost and every --tls-san. Built with the product's `pcloud.shared.pki`.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from pcloud.shared import pki

_DAY = datetime.timedelta(days=1)


def make_ca(cert_path: Path, key_path: Path) -> None:
    """Create the cluster CA (first server only)."""
    key = pki.new_key()
    cert = pki.issue("k3s-server-ca@standin", key, days=3650, ca=True, backdate=_DAY)
    pki.write_private(key_path, pki.key_pem(key))
    cert_path.write_bytes(pki.cert_pem(cert))


def make_serving(
    ca_cert_path: Path, ca_key_path: Path, out_cert: Path, out_key: Path, names: list[str]
) -> None:
    """Issue this node's serving certificate for `names` (IPs and DNS names)."""
    key = pki.new_key()
    issuer = pki.Issuer.load(ca_cert_path, ca_key_path)
    cert = pki.issue("k3s", key, days=365, issuer=issuer, names=names, backdate=_DAY)
    pki.write_private(out_key, pki.key_pem(key))
    out_cert.write_bytes(pki.cert_pem(cert))
