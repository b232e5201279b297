"""Membership of PCloud's etcd cluster: learner add + promote, remove, and the host's own unit.

Members join as learners and are promoted once in sync: a plain add to a 1-member cluster drops
it below quorum until the new member runs (writes stalled ~4 s, research/etcd.md 7). Etcd refuses
reconfiguration for about 5 s after any member (re)connects ("unhealthy cluster") and refuses to
promote a learner not yet in sync, so add, promote and remove retry with capped backoff until a
deadline (no retry library is installed; `retry` is the small helper). Leadership is moved off a
member before it is removed.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pcloud.shared.errors import StoreError
from pcloud.shared.etcd.gateway import Gateway
from pcloud.shared.etcd.member import EtcdError, MemberTls

T = TypeVar("T")


# ---- membership ---------------------------------------------------------------------------

TRANSIENT = (
    "unhealthy cluster",
    "in sync",
    "no leader",
    "unavailable",
    "timed out",
    "leader changed",
)


def retry(
    fn: Callable[[], T],
    *,
    deadline_s: float,
    transient: Callable[[Exception], bool],
    first: float = 0.2,
    factor: float = 1.5,
    cap: float = 2.0,
) -> T:
    """Call `fn` until it succeeds, retrying errors `transient` accepts with capped backoff."""
    deadline = time.monotonic() + deadline_s
    delay = first
    while True:
        try:
            return fn()
        except Exception as exc:
            if not transient(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)  # backoff before a retry, not a synchronisation
        delay = min(delay * factor, cap)


def _transient(exc: Exception) -> bool:
    return isinstance(exc, StoreError) and any(t in str(exc).lower() for t in TRANSIENT)


@dataclass(frozen=True)
class MemberInfo:
    id: str  # uint64 as the decimal string the gateway uses
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool


def _member(m: Mapping[str, Any]) -> MemberInfo:
    return MemberInfo(
        id=str(m.get("ID", "0")),
        name=str(m.get("name", "")),
        peer_urls=tuple(m.get("peerURLs", ()) or ()),
        client_urls=tuple(m.get("clientURLs", ()) or ()),
        is_learner=bool(m.get("isLearner", False)),
    )


class ClusterAdmin:
    """Membership and health over the gateway, with a member's certificate as client."""

    def __init__(self, endpoints: Sequence[str], tls: MemberTls, *, timeout: float = 3.0) -> None:
        self.tls = tls
        self.timeout = timeout
        self.gateway = Gateway(
            endpoints, ca_file=tls.ca, cert_file=tls.cert, key_file=tls.key, timeout=timeout
        )

    def _one(self, endpoint: str) -> Gateway:
        t = self.tls
        return Gateway(
            [endpoint], ca_file=t.ca, cert_file=t.cert, key_file=t.key, timeout=self.timeout
        )

    def members(self) -> list[MemberInfo]:
        answer = self.gateway.call("/v3/cluster/member/list", {})
        return [_member(m) for m in answer.get("members", [])]

    def status(self, endpoint: str) -> dict[str, object]:
        gw = self._one(endpoint)
        try:
            result: dict[str, object] = gw.call("/v3/maintenance/status", {})
            return result
        finally:
            gw.close()

    def health(self) -> dict[str, bool]:
        """Each member's view (by name) of whether it can serve: a leader and no alarm."""
        out: dict[str, bool] = {}
        for m in self.members():
            if not m.client_urls:
                out[m.name or m.id] = False  # added, never started
                continue
            try:
                status = self.status(m.client_urls[0])
            except StoreError:
                out[m.name or m.id] = False
                continue
            out[m.name or m.id] = bool(status.get("leader")) and not status.get("errors")
        return out

    def add_learner(self, name: str, peer_url: str, *, deadline_s: float = 30.0) -> dict[str, str]:
        """Add a learner; returns the --initial-cluster it must start with (state existing)."""

        def add() -> MemberInfo:
            body = {"peerURLs": [peer_url], "isLearner": True}
            return _member(self.gateway.call("/v3/cluster/member/add", body)["member"])

        existing = [m for m in self.members() if peer_url in m.peer_urls]
        new = existing[0] if existing else retry(add, deadline_s=deadline_s, transient=_transient)
        cluster = {m.name: m.peer_urls[0] for m in self.members() if m.name and m.id != new.id}
        cluster[name] = peer_url
        return cluster

    def promote(self, member_id: str, *, deadline_s: float = 30.0) -> None:
        def promote() -> None:
            self.gateway.call("/v3/cluster/member/promote", {"ID": member_id})

        retry(promote, deadline_s=deadline_s, transient=_transient)

    def remove(self, member_id: str, *, deadline_s: float = 30.0) -> None:
        """Remove a member, moving leadership off it first (its removal would stall writes)."""
        members = {m.id: m for m in self.members()}
        voters = [m for m in members.values() if not m.is_learner and m.id != member_id]
        target = members.get(member_id)
        if target is not None and target.client_urls and voters:
            status = self.status(target.client_urls[0])
            if str(status.get("leader")) == member_id:
                gw = self._one(target.client_urls[0])
                try:
                    retry(
                        lambda: gw.call(
                            "/v3/maintenance/transfer-leadership", {"targetID": voters[0].id}
                        ),
                        deadline_s=deadline_s,
                        transient=_transient,
                    )
                finally:
                    gw.close()

        def remove() -> None:
            self.gateway.call("/v3/cluster/member/remove", {"ID": member_id})

        retry(remove, deadline_s=deadline_s, transient=_transient)

    def close(self) -> None:
        self.gateway.close()


# ---- the host -----------------------------------------------------------------------------


def disable_debian_unit(
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
    proc1_comm: Path = Path("/proc/1/comm"),
) -> str:
    """Disable and stop Debian's own etcd.service, which the package enables and starts on a
    systemd host (a single-node etcd on 127.0.0.1:2379). Returns what was done.

    Without systemd as PID 1 (containers, this CI) there is no unit to stop: a no-op that says so.
    """
    try:
        init = proc1_comm.read_text().strip()
    except OSError:
        init = ""
    if init != "systemd":
        return f"PID 1 is {init or 'unknown'}, not systemd: no etcd.service to disable"
    result = run(
        ["systemctl", "disable", "--now", "etcd.service"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise EtcdError(f"systemctl disable --now etcd failed: {result.stderr.strip()}")
    return "etcd.service disabled and stopped"
