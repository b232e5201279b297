"""Keeping a daemon running (K3s, the coordination server, etcd): a systemd unit where systemd
is PID 1, otherwise a supervised child.

The systemd unit mirrors the one install.sh writes (Type=notify, KillMode=process, Delegate=yes,
Restart=always) and is ordered after pcloud-backend so the WireGuard address K3s binds to exists.
Without systemd (containers, the lab's virtual hosts) the backend starts K3s in its own session,
records its PID in a file and restarts it with capped backoff when it dies. A restarted backend
adopts the process named by the PID file instead of starting a second K3s.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from pcloud.backend.proc import reap, terminate, wait_pid_exit
from pcloud.backend.services.runner import RunError, Runner
from pcloud.shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_BACKOFF_MIN, _BACKOFF_MAX = 1.0, 30.0

UNIT_TEMPLATE = """\
# Written by PCloud (install.sh's k3s.service, ordered after the mesh).
[Unit]
Description=Lightweight Kubernetes (PCloud)
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target pcloud-backend.service

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
KillMode=process
Delegate=yes
User=root
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
{environment}ExecStart={exec_start}
"""


def systemd_running(root: Path) -> bool:
    """sd_booted(): systemd is PID 1. Never true for a lab root, whose host is not ours."""
    return root == Path("/") and Path("/run/systemd/system").is_dir()


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


class SystemdService:
    """K3s as the `k3s.service` unit."""

    def __init__(self, root: Path, runner: Runner, name: str = "k3s") -> None:
        self.name = name
        self.runner = runner
        self.unit_path = root / "etc/systemd/system" / f"{name}.service"

    async def start(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, restart: bool = False
    ) -> None:
        # The environment carries the config's digest, so a changed config changes the unit
        # and restarts K3s even when the change was written by a run that then crashed.
        environment = "".join(
            f"Environment={shlex.quote(f'{k}={v}')}\n" for k, v in sorted((env or {}).items())
        )
        text = UNIT_TEMPLATE.format(exec_start=shlex.join(argv), environment=environment)
        changed = not self.unit_path.exists() or self.unit_path.read_text() != text
        if changed:
            self.unit_path.parent.mkdir(parents=True, exist_ok=True)
            self.unit_path.write_text(text)
            await self._systemctl("daemon-reload")
        await self._systemctl("enable", self.name)
        await self._systemctl("restart" if changed or restart else "start", self.name)

    async def stop(self, argv: Sequence[str] | None = None) -> None:
        if self.unit_path.exists():
            await self._systemctl("disable", "--now", self.name)

    async def release(self) -> None:
        """Nothing to do: what systemd restarts is the unit's policy; `stop` disables it."""

    async def remove(self, argv: Sequence[str] | None = None) -> None:
        await self.stop()
        if self.unit_path.exists():
            self.unit_path.unlink()
            await self._systemctl("daemon-reload")

    came_up = False

    def died(self) -> str | None:
        return None  # systemd restarts it; a failed start shows as a timeout plus the journal

    def log_tail(self) -> str:
        return f"see `journalctl -u {self.name}`"

    async def _systemctl(self, *args: str) -> None:
        result = await self.runner.run(["systemctl", *args], timeout=120.0)
        if not result.ok:
            raise RunError(f"systemctl {' '.join(args)}: {result.stderr.strip()}")


class ChildService:
    """K3s as a child of the backend, restarted when it dies, adoptable through a PID file."""

    def __init__(self, runner: Runner, pid_file: Path, log_path: Path, name: str = "k3s") -> None:
        self.name = name  # for logs: the same class supervises pcloud-server and etcd too
        self.runner = runner
        self.pid_file = pid_file
        self.log_path = log_path
        self.pid: int | None = None
        self.exits: list[int | None] = []  # exit codes seen since start(), newest last
        self.came_up = False  # set by the driver once the API answered after start()
        self._argv: list[str] = []
        self._env: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, restart: bool = False
    ) -> None:
        """Run `argv` unless it already runs (ours or adopted); `restart` replaces it."""
        # The supervisor must not mistake a deliberate restart for a crash.
        await self._cancel_supervisor()
        self._argv, self._env = list(argv), dict(env or {})
        self.exits = []
        self.came_up = False
        self._stopping = False
        current = self._adoptable()
        if current is not None and (restart or self._recorded_fingerprint() != self._fingerprint()):
            # Started with another command or config: replace it.
            await terminate(current, grace=10.0)
            current = None
        if current is None:
            self._launch()
        else:
            log.info("%s already running as pid %d; adopting it", self.name, current)
            self.pid = current
        self._task = asyncio.create_task(self._supervise(), name=f"{self.name}-supervisor")

    async def _cancel_supervisor(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def stop(self, argv: Sequence[str] | None = None) -> None:
        """Stop K3s; `argv` identifies a K3s started by an earlier backend (PID file)."""
        self._stopping = True
        await self._cancel_supervisor()
        if argv is not None:
            self._argv = list(argv)
        pid = self.pid if self.pid is not None else self._adoptable()
        if pid is not None:
            await terminate(pid, grace=10.0)
        self.pid = None
        self.pid_file.unlink(missing_ok=True)

    async def remove(self, argv: Sequence[str] | None = None) -> None:
        await self.stop(argv)

    async def release(self) -> None:
        """Stop restarting it, leaving the process as it is: it is about to exit on its own
        (an etcd member removed from its cluster does), which is then no crash."""
        self._stopping = True
        await self._cancel_supervisor()

    def died(self) -> str | None:
        """Why K3s failed to start, if it exited since start() before ever coming up.

        A crash after it came up is only restarted: waiting callers wait through it."""
        if not self.exits or self.came_up:
            return None
        return f"{self.name} exited with code {self.exits[-1]}: {self.log_tail()}"

    def log_tail(self, size: int = 2000) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - size))
                return f.read().decode(errors="replace").strip()
        except OSError:
            return ""

    def _fingerprint(self) -> str:
        doc = json.dumps([self._argv, sorted(self._env.items())]).encode()
        return hashlib.sha256(doc).hexdigest()

    def _recorded_fingerprint(self) -> str:
        try:
            lines = self.pid_file.read_text().split()
        except OSError:
            return ""
        return lines[1] if len(lines) > 1 else ""

    def _adoptable(self) -> int | None:
        """The PID in the PID file, if that process still runs our K3s command."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        cmd = _cmdline(pid)
        # The binary may be a wrapper that exec()s something else, so compare what follows
        # argv[0]: the subcommand and its --config path are specific to this root.
        tail = self._argv[1:]
        if tail and cmd[-len(tail) :] == tail:
            return pid
        return None

    def _launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.pid = self.runner.spawn(self._argv, env=self._env, log_path=str(self.log_path))
        self.pid_file.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        # The PID, then what it was started with: a later start() adopts it only if equal.
        self.pid_file.write_text(f"{self.pid}\n{self._fingerprint()}\n")

    async def _supervise(self) -> None:
        backoff = _BACKOFF_MIN
        while not self._stopping:
            pid = self.pid
            if pid is None:
                return
            await wait_pid_exit(pid)
            code = reap(pid)
            if self._stopping:
                return
            self.exits.append(code)
            log.warning(
                "%s (pid %d) exited with %s; restarting in %.0fs", self.name, pid, code, backoff
            )
            self.pid = None
            # Backoff between restarts of a crashing daemon, not a synchronisation wait.
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)
            if not self._stopping:
                try:
                    self._launch()
                except RunError as exc:
                    log.error("cannot restart %s: %s", self.name, exc)
