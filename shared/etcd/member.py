"""One of PCloud's own etcd members (Debian's etcd-server 3.4): certificate, flags, process.

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
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from pcloud.shared import pki
from pcloud.shared.errors import StoreError
from pcloud.shared.etcd.gateway import ssl_context

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


# ---- processes ----------------------------------------------------------------------------


def _pid_is_etcd(pid: int) -> bool:
    """A live etcd has this PID (not a zombie awaiting its parent, not a recycled PID)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "PID (comm) STATE ...": comm may hold spaces, so split at the last parenthesis.
    comm = stat[stat.find("(") + 1 : stat.rfind(")")]
    return comm == "etcd" and stat[stat.rfind(")") + 2 :][:1] not in ("Z", "X")


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM one etcd by PID (it hands off leadership first), SIGKILL after `timeout`.

    For a member this process did not start (a supervisor restarted meanwhile); checks that the
    PID is still an etcd so a recycled PID is never signalled.
    """
    if not _pid_is_etcd(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_is_etcd(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a process we do not parent: no wait() is possible
    if _pid_is_etcd(pid):
        os.kill(pid, signal.SIGKILL)


class EtcdMember:
    """One etcd process: start (returns its PID), wait healthy, stop or kill by PID."""

    def __init__(
        self, spec: MemberSpec, argv: Sequence[str], *, log_path: Path | None = None
    ) -> None:
        self.spec = spec
        self.argv = list(argv)
        self.log_path = log_path or spec.data_dir.with_name(spec.data_dir.name + ".log")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> int:
        self.spec.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # A session of its own: a signal to the server's process group must not take the
            # member down with it (research/etcd.md 8.10); it is stopped by PID.
            self._proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self._proc.pid

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _answered_by_me(self, resp: httpx.Response) -> bool:
        """The member that answered on our client URL is this one, not another process holding
        the port: its certificate names this member (learners serve no member list to ask)."""
        stream = resp.extensions.get("network_stream")
        tls = stream.get_extra_info("ssl_object") if stream is not None else None
        if tls is None:
            return False
        subject = dict(pair[0] for pair in tls.getpeercert().get("subject", ()))
        return bool(subject.get("commonName") == f"{CN_PREFIX}{self.spec.name}")

    def wait_healthy(self, deadline_s: float = 20.0) -> None:
        """Until GET /health says true on this member; raises with the log tail otherwise."""
        verify = ssl_context(self.spec.tls.ca, self.spec.tls.cert, self.spec.tls.key)
        deadline = time.monotonic() + deadline_s
        with httpx.Client(verify=verify, timeout=1.0) as client:
            while True:
                if not self.running():
                    raise EtcdError(f"etcd {self.spec.name} exited:\n{self.log_tail()}")
                try:
                    resp = client.get(self.spec.client_url + "/health")
                    if resp.status_code == 200 and resp.json().get("health") == "true":
                        if self._answered_by_me(resp):
                            return
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                if time.monotonic() > deadline:
                    raise EtcdError(f"etcd {self.spec.name} not healthy after {deadline_s} s")
                time.sleep(0.05)  # polling a child that offers no readiness signal

    def wait_exit(self, timeout: float) -> int | None:
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID (a leader hands off leadership first), SIGKILL after `timeout`."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self._proc.pid, signal.SIGKILL)
                self._proc.wait(5)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait(5)
