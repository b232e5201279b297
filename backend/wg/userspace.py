"""The userspace driver: a supervised `wireguard-go -f IFNAME`, configured over its UAPI socket.

wireguard-go owns the TUN device: when it exits the interface disappears with it. So the driver
supervises the process (a pidfd tells us the moment it dies, whether we started it or adopted
it) and, when it dies unasked, starts it again and re-applies the last desired config. It runs
in its own session so it outlives the backend: a backend restart adopts the running process
(found through the socket's SO_PEERCRED) and established tunnels are never dropped.

wireguard-go always puts its socket in /var/run/wireguard. When `socket_dir` is another
directory the driver starts it in a private mount namespace with `socket_dir` bind-mounted over
/var/run/wireguard, so the socket lands where the driver looks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable

from pcloud.backend.proc import reap, terminate, wait_pid_exit
from pcloud.backend.wg import link
from pcloud.backend.wg.diff import ConfigDiff, applied_endpoints, applied_tries, diff
from pcloud.backend.wg.driver import DriverError, DriverEvent, InterfaceConfig, PeerStats
from pcloud.backend.wg.uapi_client import DEFAULT_SOCKET_DIR, UapiClient, socket_path
from pcloud.shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

WG_GO_SOCKET_DIR = "/var/run/wireguard"  # compiled into wireguard-go
_LOG_MAX = 1024 * 1024  # truncate the wireguard-go log at start beyond this
_POLL = 0.05  # how often start-up conditions are re-checked while waiting with a deadline
_BACKOFF_MIN, _BACKOFF_MAX = 0.5, 30.0
# Popen objects of wireguard-go processes we deliberately leave running at close(): kept
# referenced so Python neither warns about nor reaps them behind our back.
_left_running: list[subprocess.Popen[bytes]] = []


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _child_env() -> dict[str, str]:
    """wireguard-go's environment: ours, its log level, and the opt-in it demands."""
    return {
        **os.environ,
        "LOG_LEVEL": os.environ.get("PCLOUD_WG_LOG_LEVEL", "error"),
        # wireguard-go refuses to start on Linux where a WireGuard kernel module exists unless
        # told this. We only run it when the userspace driver was chosen on purpose (no module,
        # or --driver userspace), so the choice is ours to confirm, not every caller's.
        "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1",
    }


class UserspaceDriver:
    """One WireGuard interface served by wireguard-go. See the module docstring."""

    kind = "userspace"

    def __init__(
        self,
        name: str,
        socket_dir: str = DEFAULT_SOCKET_DIR,
        binary: str = "wireguard-go",
        on_event: Callable[[DriverEvent], None] | None = None,
        *,
        log_path: str | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.socket_dir = socket_dir
        self.binary = binary
        self.on_event = on_event
        self.log_path = log_path or os.path.join(socket_dir, f"{name}.log")
        self.start_timeout = start_timeout
        self._uapi = UapiClient(name, socket_dir)
        self._lock = asyncio.Lock()
        self._pid: int | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._desired: InterfaceConfig | None = None
        # The endpoints the last apply wanted: re-applies leave WireGuard's roaming alone.
        self._applied: dict[str, str | None] | None = None
        self._tries: dict[str, int] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False

    # -- public API (the Driver protocol) ---------------------------------------------------

    @property
    def pid(self) -> int | None:
        """PID of the wireguard-go being supervised (None before start or when unknown)."""
        return self._pid

    async def start(self) -> None:
        if self._supervisor is not None:
            return
        self._closing = False
        async with self._lock:
            pid = await self._uapi.server_pid()
            if pid is not None:
                if not await link.link_exists(self.name):
                    raise DriverError(
                        f"wireguard-go serves {self.name} at {self._uapi.path} but the interface"
                        " is not in this network namespace"
                    )
                self._pid = pid
                self._emit("adopted", f"pid {pid}")
            else:
                await self._launch()
                self._emit("started", f"pid {self._pid}")
        self._supervisor = asyncio.create_task(self._supervise(), name=f"wg-supervise-{self.name}")

    async def apply(self, config: InterfaceConfig) -> None:
        async with self._lock:
            # Remembered first: if wireguard-go is down right now, the supervisor applies it
            # once the process is back.
            self._desired = config
            await self._apply_locked(config)

    async def stats(self) -> list[PeerStats]:
        return (await self._uapi.get()).stats()

    async def listen_port(self) -> int:
        try:
            return (await self._uapi.get()).listen_port
        except DriverError:
            return 0

    async def rebind(self) -> None:
        """Forget the source address wireguard-go keeps per peer: after this host's addresses
        changed (it moved to another network) it would go on sending from a gone address and
        every packet would fail. Setting the listen port (to the same value) rebinds its socket
        and clears them; the kernel's WireGuard needs none of this (it re-routes by itself)."""
        async with self._lock:
            port = (await self._uapi.get()).listen_port
            if port:
                await self._uapi.set(ConfigDiff(listen_port=port))

    async def close(self, *, remove_interface: bool) -> None:
        self._closing = True
        if self._supervisor is not None:
            await cancel_and_wait(self._supervisor)
            self._supervisor = None
        if remove_interface:
            async with self._lock:
                await self._terminate()
                await link.delete_link(self.name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._uapi.path)
        elif self._popen is not None and self._popen.poll() is None:
            _left_running.append(self._popen)
        self._popen = None

    # -- internals ----------------------------------------------------------------------------

    def _emit(self, kind: str, detail: str = "") -> None:
        log.info("wireguard-go %s: %s %s", self.name, kind, detail)
        if self.on_event is not None:
            try:
                self.on_event(DriverEvent(kind=kind, detail=detail))
            except Exception:  # a broken listener must not stop supervision
                log.exception("on_event callback failed")

    def _command(self) -> list[str]:
        if os.path.realpath(self.socket_dir) == os.path.realpath(WG_GO_SOCKET_DIR):
            return [self.binary, "-f", self.name]
        # Private mount namespace so the bind mount is seen by wireguard-go only; `exec` keeps
        # the PID, so the PID we hold is wireguard-go's own.
        script = (
            f'mkdir -p {WG_GO_SOCKET_DIR} && mount --bind "$1" {WG_GO_SOCKET_DIR}'
            ' && exec "$2" -f "$3"'
        )
        return [
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", script, "sh", self.socket_dir, self.binary, self.name,
        ]  # fmt: skip

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 1500))
                return f.read().decode("utf-8", errors="replace").strip()
        except OSError:
            return ""

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Fork wireguard-go (quick, synchronous: a fork/exec and a few file operations)."""
        if shutil.which(self.binary) is None:
            # Checked here because behind the unshare wrapper a missing binary is only an
            # exit code 127 from sh.
            raise DriverError(f"cannot run {self.binary}: not found")
        os.makedirs(self.socket_dir, mode=0o700, exist_ok=True)
        # Nobody answers on the socket (checked by the callers), so a file there is a leftover
        # of a killed process; wireguard-go cannot listen while it exists.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path(self.name, self.socket_dir))
        with contextlib.suppress(OSError):
            if os.path.getsize(self.log_path) > _LOG_MAX:
                os.truncate(self.log_path, 0)
        # The log is a file, never a pipe to us: wireguard-go outlives the backend, and a Go
        # program writing to a closed pipe on stderr dies of SIGPIPE.
        logfd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            return subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=logfd,
                stderr=logfd,
                start_new_session=True,  # own session and process group: survives our exit
                env=_child_env(),
            )
        except OSError as exc:
            raise DriverError(f"cannot run {self.binary}: {exc}") from None
        finally:
            os.close(logfd)

    async def _launch(self) -> None:
        """Start wireguard-go and wait (with a deadline) until its UAPI socket answers."""
        popen = self._spawn()
        self._popen, self._pid = popen, popen.pid
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = popen.poll()
            if code is not None:
                self._pid = None
                raise DriverError(
                    f"wireguard-go for {self.name} exited with {code}: {self._log_tail()}"
                )
            if await self._uapi.server_pid() is not None and await link.link_exists(self.name):
                return
            if time.monotonic() > deadline:
                await self._terminate()
                raise DriverError(
                    f"wireguard-go for {self.name} did not open {self._uapi.path} within "
                    f"{self.start_timeout:.0f}s: {self._log_tail()}"
                )
            # Short wait that ends early if the process dies.
            await wait_pid_exit(popen.pid, _POLL)

    async def _terminate(self) -> None:
        """SIGTERM wireguard-go (SIGKILL if it lingers) and wait until it is gone."""
        pid, self._pid = self._pid, None
        if pid is not None:
            await terminate(pid, grace=5.0)

    async def _apply_locked(self, config: InterfaceConfig) -> None:
        try:
            change = diff(await self._uapi.get(), config, self._applied, self._tries)
            await self._uapi.set(change)
            self._applied, self._tries = applied_endpoints(config), applied_tries(config)
            await link.configure(self.name, config.address, mtu=config.mtu, routes=config.routes)
        except (ValueError, OSError) as exc:
            # Anything but DriverError would end the supervisor's restart loop, which only
            # expects DriverError: every failure of an apply is one.
            raise DriverError(f"cannot configure {self.name}: {exc}") from None

    async def _supervise(self) -> None:
        """Wait for wireguard-go to die; bring it back with the last desired config."""
        while not self._closing:
            pid = self._pid
            if pid is not None:
                await wait_pid_exit(pid)
                code = reap(pid)
            else:
                # Adopted without a visible PID (another PID namespace): all we can do is
                # check the socket now and then.
                while True:
                    if await self._uapi.server_pid() is None:
                        break
                    await asyncio.sleep(1.0)
                code = None
            if self._closing:
                return
            self._emit("exited", f"pid {pid} exit code {code}")
            backoff = _BACKOFF_MIN
            while not self._closing:
                try:
                    async with self._lock:
                        # After a failed re-apply the new process may be fine: keep it.
                        if not _alive(self._pid):
                            self._pid = None
                            await self._launch()
                        if self._desired is not None:
                            await self._apply_locked(self._desired)
                    self._emit("restarted", f"pid {self._pid}")
                    break
                except DriverError as exc:
                    self._emit("restart_failed", str(exc))
                    # Backoff between attempts (not a synchronisation wait).
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
