"""One of PCloud's own etcd members (Debian's etcd-server 3.4): its certificate and its flags.

Each member listens only on its server's overlay address, so peer and client traffic stays inside
WireGuard, and speaks TLS with a leaf from the network CA on both sides (client certificates
required: the store holds token and password hashes, and every overlay node can reach the port).
The flags follow research/etcd.md (measured on 3.4.23):

- ports 2479 (client) / 2480 (peer): K3s's embedded etcd holds 2379/2380 on the same address;
- `--pre-vote=true`: 3.4 defaults to false, and an isolated member then inflates the raft term
  and forces an election when it returns;
- `--auto-compaction-mode=periodic --auto-compaction-retention=1h`: 3.4 never compacts by
  default and stops taking writes at the 2 GiB quota;
- `--max-txn-ops=1024`: one commit is one txn, and the default 128 is too small for a big one;
- `--experimental-watch-progress-notify-interval=5s`: an idle watch is otherwise silent for 10
  min, so a dead stream could not be told from a quiet one (EtcdStore's idle timeout is 20 s);
- `--logger=zap`: the 3.4 default (capnslog) is deprecated and warns on every start.

Membership (learner add, promote, remove) lives in cluster.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pcloud.shared import pki
from pcloud.shared.errors import StoreError

CLIENT_PORT = 2479
PEER_PORT = 2480
CLUSTER_TOKEN = "pcloud-etcd"
CN_PREFIX = "pcloud-etcd "  # + member name: the subject of each member's certificate


class EtcdError(StoreError):
    """A member would not start, become healthy or change membership in time."""


class NotConfirmed(EtcdError):
    """A destructive operation was asked for without its explicit confirmation."""


# ---- certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberTls:
    ca: Path
    cert: Path
    key: Path


def issue_member_cert(
    ca_cert: Path, ca_key: Path, name: str, addresses: Sequence[str], out_dir: Path
) -> MemberTls:
    """A leaf from the network CA for one member, good as server and as client (peers dial
    each other with it, and pcloud-server presents it to the client port).

    `addresses` must include the address the member dials its peers from: etcd checks a peer's
    client certificate against the connection's source IP. On the overlay that is the member's
    own overlay address (the route to the overlay prefix has it as `src`)."""
    key = pki.new_key()
    cert = pki.issue(
        CN_PREFIX + name, key, days=730, issuer=pki.Issuer.load(ca_cert, ca_key),
        names=addresses, usages=[pki.SERVER_AUTH, pki.CLIENT_AUTH],
    )  # fmt: skip
    out = MemberTls(ca=ca_cert, cert=out_dir / f"etcd-{name}.pem", key=out_dir / f"etcd-{name}.key")
    pki.write_private(out.key, pki.key_pem(key))
    out.cert.write_bytes(pki.cert_pem(cert))
    return out


# ---- command line -------------------------------------------------------------------------


def _host(address: str) -> str:
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


@dataclass(frozen=True)
class MemberSpec:
    name: str
    address: str  # the server's overlay address: the only one the member listens on
    data_dir: Path
    tls: MemberTls
    client_port: int = CLIENT_PORT
    peer_port: int = PEER_PORT

    @property
    def client_url(self) -> str:
        return f"https://{_host(self.address)}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{_host(self.address)}:{self.peer_port}"


def etcd_argv(
    spec: MemberSpec,
    initial_cluster: Mapping[str, str],
    state: Literal["new", "existing"],
    *,
    token: str = CLUSTER_TOKEN,
    binary: str = "etcd",
    force_new_cluster: bool = False,
) -> list[str]:
    """The `etcd` command line for one member (see the module docstring for the why of each)."""
    tls = spec.tls
    argv = [
        binary,
        f"--name={spec.name}",
        f"--data-dir={spec.data_dir}",
        f"--listen-client-urls={spec.client_url}",
        f"--advertise-client-urls={spec.client_url}",
        f"--listen-peer-urls={spec.peer_url}",
        f"--initial-advertise-peer-urls={spec.peer_url}",
        "--initial-cluster=" + ",".join(f"{n}={u}" for n, u in initial_cluster.items()),
        f"--initial-cluster-state={state}",
        f"--initial-cluster-token={token}",
        f"--cert-file={tls.cert}",
        f"--key-file={tls.key}",
        f"--trusted-ca-file={tls.ca}",
        "--client-cert-auth=true",
        f"--peer-cert-file={tls.cert}",
        f"--peer-key-file={tls.key}",
        f"--peer-trusted-ca-file={tls.ca}",
        "--peer-client-cert-auth=true",
        "--pre-vote=true",
        "--auto-compaction-mode=periodic",
        "--auto-compaction-retention=1h",
        "--max-txn-ops=1024",
        "--experimental-watch-progress-notify-interval=5s",
        "--logger=zap",
        "--log-outputs=stderr",
    ]
    if force_new_cluster:
        argv.append("--force-new-cluster=true")
    return argv


def force_new_cluster_argv(spec: MemberSpec, *, confirm: bool) -> list[str]:
    """Restart the last survivor as a 1-member cluster after losing two of three for good.

    Destructive for the lost members (they can never rejoin with their data; wipe and re-add
    them as learners) and it discards any write they held that the survivor lacks. Run it once
    with `confirm=True` and restart without the flag afterwards (research/etcd.md 5).
    """
    if not confirm:
        raise NotConfirmed(
            "force-new-cluster rewrites the membership to this member alone; "
            "confirm explicitly once the other members are known to be gone for good"
        )
    return etcd_argv(spec, {spec.name: spec.peer_url}, "existing", force_new_cluster=True)
