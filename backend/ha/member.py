"""This server's own etcd member and the coordination server's store flags, for the HA jobs.

The member runs Debian's `etcd` with the flags of `pcloud.shared.etcd.member` (overlay
address only, ports 2479/2480, TLS both ways with a leaf from the network CA). Like
`pcloud-server` it is a systemd unit (`pcloud-etcd.service`) where systemd runs, otherwise a child
the backend supervises and adopts after a restart through its PID file (the K3s driver's
`ChildService`). What runs is recorded in STATE_DIR/ha.json (the argv, whether it is wanted, the
store in use), so a restarted backend resumes it without any job running (`resume`), and a member
that was removed stays stopped (`remove` records that before it stops anything).

The process has one supervisor for the backend's life, `backend.services.supervisor("etcd")`:
every `LocalMember` (one per job) drives that same object, so a stop is never taken for a crash by
a second supervisor that then relaunches the member.

etcd's membership calls (`ClusterAdmin`) are synchronous and retry with sleeps: they run in a
thread so the backend's event loop keeps serving the local API meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from pcloud.backend.persist import atomic_write
from pcloud.backend.proc import wait_until_up
from pcloud.backend.server_supervisor import Supervisor
from pcloud.backend.services.runner import RunError
from pcloud.backend.services.service import ChildService
from pcloud.shared.etcd.cluster import ClusterAdmin, MemberInfo
from pcloud.shared.etcd.gateway import ssl_context
from pcloud.shared.etcd.member import CLIENT_PORT, MemberSpec, MemberTls, issue_member_cert

if TYPE_CHECKING:
    from pcloud.backend.node_host import NodeHost

log = logging.getLogger(__name__)

UNIT = "pcloud-etcd"
ETCD_BINARY = "etcd"


class HaError(RuntimeError):
    """An HA step cannot go on; the message says why and what to do."""


def client_url(address: str, port: int = CLIENT_PORT) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port}"


def store_args(endpoints: Sequence[str], tls: MemberTls) -> list[str]:
    """pcloud-server's flags for the shared store (the server persists them in server.json).
    The member's own certificate doubles as the server's client certificate."""
    args = ["--store", "etcd"]
    for url in endpoints:
        args += ["--etcd-endpoint", url]
    return args + [
        "--etcd-ca", str(tls.ca), "--etcd-cert", str(tls.cert), "--etcd-key", str(tls.key),
    ]  # fmt: skip


def without_store_args(argv: Sequence[str]) -> list[str]:
    """`argv` with any store flags removed (to add the current ones)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--store", "--etcd-endpoint", "--etcd-ca", "--etcd-cert", "--etcd-key"):
            skip = True
            continue
        out.append(arg)
    return out


class LocalMember:
    """The etcd member on this machine: certificate, process, health, membership calls."""

    def __init__(self, backend: NodeHost) -> None:
        self.backend = backend
        state_dir = backend.settings.state_dir
        self.dir = state_dir / "etcd"
        self.data_dir = self.dir / "data"
        self.server_dir = backend.services.server_dir
        self.record = state_dir / "ha.json"
        self.name = backend.settings.hostname
        self.service: Supervisor = backend.services.supervisor("etcd", unit=UNIT)

    # -- what is recorded ------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.record.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data

    def save(self, **changes: Any) -> None:
        data = self.load()
        data.update(changes)
        self.record.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(self.record, json.dumps(data, indent=1).encode())

    @property
    def on_etcd(self) -> bool:
        """This machine's coordination server runs on the shared etcd store."""
        return self.load().get("store") == "etcd"

    # -- certificate and spec --------------------------------------------------------------

    @property
    def tls(self) -> MemberTls:
        return MemberTls(
            ca=self.server_dir / "tls" / "ca.pem",
            cert=self.dir / f"etcd-{self.name}.pem",
            key=self.dir / f"etcd-{self.name}.key",
        )

    def address(self) -> str:
        node = self.backend.node
        if node is None:
            raise HaError("this device is not in a network")
        return node.address

    def spec(self) -> MemberSpec:
        return MemberSpec(self.name, self.address(), self.data_dir, self.tls)

    def ensure_cert(self) -> MemberTls:
        """The member's leaf from the network CA (made once; the key is 0600)."""
        tls = self.tls
        if tls.cert.exists() and tls.key.exists():
            return tls
        ca_key = self.server_dir / "tls" / "ca.key"  # the coordination server's CA (tls.py)
        if not ca_key.exists():
            raise HaError(f"the network CA key is not on this server ({ca_key})")
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return issue_member_cert(tls.ca, ca_key, self.name, [self.address()], self.dir)

    # -- the process -----------------------------------------------------------------------

    @property
    def wanted(self) -> bool:
        """A member is recorded and should run (not removed, not being removed)."""
        record = self.load()
        return bool(record.get("argv")) and record.get("wanted", True) is not False

    async def start(self, argv: list[str], *, restart: bool = False) -> None:
        self.save(argv=argv, wanted=True)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            await self.service.start(argv, restart=restart)
        except RunError as exc:
            raise HaError(f"cannot start etcd: {exc}") from None

    async def stop(self) -> None:
        argv = self.load().get("argv")
        await self.service.stop(list(argv) if argv else None)

    def wipe(self) -> None:
        """A removed member's data dir is poisoned (research/etcd.md 8.4): never reuse it."""
        shutil.rmtree(self.data_dir, ignore_errors=True)

    async def leaving(self) -> None:
        """Before this member is removed from the cluster: recorded as not wanted and no
        longer restarted, since a removed member exits on its own (research/etcd.md 7.5).
        A backend that restarts from here on must not resume it (on a wiped or poisoned data
        dir it would start as a new 1-member cluster)."""
        self.save(wanted=False)
        await self.service.release()

    async def remove(self) -> None:
        """This member left the cluster: stopped for good, its data dir wiped."""
        await self.leaving()
        await self.stop()
        self.wipe()
        self.save(argv=None)

    async def resume(self) -> None:
        """After a backend restart: supervise (adopt) the member we ran before, if it is
        still wanted; a member left running while removal was under way is stopped."""
        argv = self.load().get("argv")
        if argv and not self.wanted:
            await self.stop()
            return
        if argv and isinstance(self.service, ChildService):
            try:
                await self.service.start(list(argv))
                self.service.came_up = True
            except RunError as exc:
                log.error("cannot resume the etcd member: %s", exc)

    async def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until this member's /health says true (it has a leader), answered by this member."""
        url = client_url(self.address()) + "/health"
        verify = ssl_context(self.tls.ca, self.tls.cert, self.tls.key)

        def healthy(answer: httpx.Response) -> bool:
            return answer.status_code == 200 and answer.json().get("health") == "true"

        await wait_until_up(
            "etcd", url, lambda: verify, timeout=timeout, daemon=self.service, error=HaError,
            healthy=healthy,
        )  # fmt: skip

    # -- membership (blocking calls, in a thread) ------------------------------------------

    def admin(self, endpoints: Sequence[str]) -> ClusterAdmin:
        return ClusterAdmin(list(endpoints), self.tls, timeout=3.0)

    async def members(self, endpoints: Sequence[str]) -> list[MemberInfo]:
        admin = self.admin(endpoints)
        try:
            return await asyncio.to_thread(admin.members)
        finally:
            admin.close()

    async def health(self, endpoints: Sequence[str]) -> dict[str, bool]:
        """Voters (by name) and whether each serves; learners do not count for quorum."""
        admin = self.admin(endpoints)
        try:
            members = await asyncio.to_thread(admin.members)
            health = await asyncio.to_thread(admin.health)
        finally:
            admin.close()
        voters = {m.name or m.id for m in members if not m.is_learner}
        return {name: ok for name, ok in health.items() if name in voters}


def peer_server_addresses(backend: NodeHost) -> list[str]:
    """Overlay addresses of the other server-role nodes in our netmap."""
    netmap = backend.netmap
    if netmap is None:
        return []
    return [p.address for p in netmap.peers if p.role == "server"]


def data_dir_exists(path: Path) -> bool:
    return (path / "member").is_dir()
