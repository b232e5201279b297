"""One real etcd process for tests: start (returns its PID), wait healthy, stop or kill by PID,
and `join`, which adds a member to a running cluster the way the ha-join job does (learner, start,
promote). The product supervises its member with the backend's ChildService/SystemdService instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from pcloud.shared.etcd.cluster import ClusterAdmin
from pcloud.shared.etcd.gateway import ssl_context
from pcloud.shared.etcd.member import CN_PREFIX, EtcdError, MemberSpec, etcd_argv


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


def join(admin: ClusterAdmin, spec: MemberSpec, *, deadline_s: float = 60.0) -> EtcdMember:
    """Add `spec` as a learner, start it, wait until healthy, promote it to a voter."""
    cluster = admin.add_learner(spec.name, spec.peer_url, deadline_s=deadline_s)
    member = EtcdMember(spec, etcd_argv(spec, cluster, "existing"))
    member.start()
    try:
        member.wait_healthy(deadline_s)
        new_id = next(m.id for m in admin.members() if spec.peer_url in m.peer_urls)
        admin.promote(new_id, deadline_s=deadline_s)
    except BaseException:
        # Leave no half-joined process behind; the learner entry stays, and join() again
        # finds it by its peer URL and starts the member on the same data dir.
        member.stop()
        raise
    return member
