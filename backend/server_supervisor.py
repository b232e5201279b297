"""Keeping this machine's server-side daemons running: `pcloud-server` and, once installed, K3s.

Where systemd is PID 1 (and the system root is "/"), the coordination server is the
`pcloud-server.service` unit, written under the system root and enabled, so it starts at boot
without the backend. Elsewhere (containers, the lab's virtual hosts) the backend runs it as a
child in its own session, restarts it when it dies and, after a backend restart, adopts the
running one through its PID file instead of starting a second (the K3s driver's `ChildService`
does exactly this for K3s, so both daemons share it).

What runs is remembered in STATE_DIR/services.json (the server's argv, K3s's role), so a
restarted backend resumes supervising both without any job running.

Every supervised daemon has ONE supervisor object for the backend's whole life, kept in the
registry here (`supervisor(name)`): a job that starts or stops a daemon goes through that object.
Two supervisors of one process are a bug, not a style issue: stopping the process through one
leaves the other seeing a crash and relaunching the recorded command (issue 12: a removed etcd
member came back as a cluster of its own on its wiped data dir). The server's stdout, which
carries the one-time setup code, goes nowhere: the code is read from its 0600 file instead.
"""

from __future__ import annotations

import json
import logging
import shlex
import ssl
import sys
from pathlib import Path
from typing import Any, Literal, TypeAlias

from pcloud.backend.k3s.config import Role
from pcloud.backend.persist import atomic_write
from pcloud.backend.proc import wait_until_up
from pcloud.backend.services.runner import RunError, Runner, SubprocessRunner
from pcloud.backend.services.service import ChildService, SystemdService, systemd_running

log = logging.getLogger(__name__)

Manager = Literal["auto", "systemd", "child"]
Supervisor: TypeAlias = SystemdService | ChildService
UNIT_NAME = "pcloud-server"

# The one server unit: install-server writes it with its flags, and
# packaging/systemd/pcloud-server.service is this text with the packaged ExecStart (a test holds
# them equal). Root, because the server's state lives in the backend's 0700 state dir
# (STATE_DIR/server, `pcloud.server.layout`) and its admin socket is root-only.
UNIT_TEMPLATE = """\
# PCloud coordination server (HTTPS). State, CA and certificates: /var/lib/pcloud/server
# (the setup code for the first admin: /var/lib/pcloud/server/setup-code, 0600).
# `pcloud install-server` writes this unit with its flags; `pcloud-server admin ...` finds the
# server there without flags.
[Unit]
Description=PCloud coordination server
Wants=network-online.target
After=network-online.target

[Service]
ExecStart={exec_start}
Restart=always
RestartSec=2s
# stdout carries the one-time setup code: it stays in its 0600 file, not in the journal.
StandardOutput=null
StandardError=journal
UMask=0077
LimitNOFILE=65536
NoNewPrivileges=yes
PrivateTmp=yes
ProtectHome=yes
ProtectSystem=full
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
LockPersonality=yes

[Install]
WantedBy=multi-user.target
"""


class ServiceError(RuntimeError):
    """The coordination server could not be started or did not answer."""


class QuietRunner(SubprocessRunner):
    """Spawns daemons with stdout discarded and stderr (the log) in the log file."""

    stdout_to_log = False


def server_argv(
    state_dir: Path,
    listen: str,
    network: str,
    hostname: str,
    domain: str = "",
    public_url: str = "",
) -> list[str]:
    # A further server of a network takes the network's DNS domain (from our netmap), so every
    # server hands out the same names.
    return [
        sys.executable, "-m", "pcloud.server",
        "--state-dir", str(state_dir), "--listen", listen,
        "--network", network, "--hostname", hostname,
        *(["--domain", domain] if domain else []),
        *(["--public-url", public_url] if public_url else []),
    ]  # fmt: skip


class Services:
    """The coordination server (and K3s's role) this backend keeps running."""

    def __init__(
        self,
        state_dir: Path,
        *,
        system_root: Path = Path("/"),
        manager: Manager = "auto",
        runner: Runner | None = None,
    ) -> None:
        self.server_dir = state_dir / "server"
        self.record = state_dir / "services.json"
        self.root = system_root
        if manager == "auto":
            manager = "systemd" if systemd_running(system_root) else "child"
        self.manager = manager
        self.runner = runner or QuietRunner()
        self.unit_path = system_root / "etc/systemd/system" / f"{UNIT_NAME}.service"
        self.state_dir = state_dir
        self.child = ChildService(
            self.runner,
            state_dir / "pcloud-server.pid",
            state_dir / "pcloud-server.log",
            name="pcloud-server",
        )
        # The server's systemd unit is written by this class itself (UNIT_TEMPLATE).
        self._supervisors: dict[str, Supervisor] = {"pcloud-server": self.child}

    def supervisor(self, name: str, unit: str | None = None) -> Supervisor:
        """The one supervisor of daemon `name` (a systemd unit `unit`, default `name`, or a
        child with STATE_DIR/NAME.pid and NAME.log), made at its first use and kept for the
        backend's life. Every job starting or stopping that daemon must use this object."""
        found = self._supervisors.get(name)
        if found is None:
            if self.manager == "systemd":
                found = SystemdService(self.root, self.runner, unit or name)
            else:
                found = ChildService(
                    self.runner,
                    self.state_dir / f"{name}.pid",
                    self.state_dir / f"{name}.log",
                    name=name,
                )
            self._supervisors[name] = found
        return found

    # -- what is recorded ----------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.record.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data

    def _save(self, **changes: Any) -> None:
        data = self._load()
        data.update(changes)
        atomic_write(self.record, json.dumps(data, indent=1).encode())

    @property
    def k3s_role(self) -> Role | None:
        role = self._load().get("k3s_role")
        return "server" if role == "server" else "agent" if role == "agent" else None

    def remember_k3s(self, role: Role) -> None:
        self._save(k3s_role=role)

    # -- the coordination server ---------------------------------------------------------------

    def record_server(self, listen: str, network: str, hostname: str, domain: str = "") -> None:
        """Record the server's command line without starting it (HA adds store flags first)."""
        self._save(server_argv=server_argv(self.server_dir, listen, network, hostname, domain))

    async def start_server(
        self, listen: str, network: str, hostname: str, public_url: str = ""
    ) -> None:
        """Start (or adopt) the coordination server; no-op if it runs with these settings."""
        argv = server_argv(self.server_dir, listen, network, hostname, public_url=public_url)
        self._save(server_argv=argv)
        await self._start(argv)

    async def _start(self, argv: list[str]) -> None:
        if self.manager == "systemd":
            await self._start_unit(argv)
        else:
            self.server_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            await self.child.start(argv)

    async def _start_unit(self, argv: list[str]) -> None:
        text = UNIT_TEMPLATE.format(exec_start=shlex.join(argv))
        changed = not self.unit_path.exists() or self.unit_path.read_text() != text
        if changed:
            self.unit_path.parent.mkdir(parents=True, exist_ok=True)
            self.unit_path.write_text(text)
            await self._systemctl("daemon-reload")
        await self._systemctl("enable", "--now", UNIT_NAME)
        if changed:
            await self._systemctl("restart", UNIT_NAME)

    async def _systemctl(self, *args: str) -> None:
        result = await self.runner.run(["systemctl", *args], timeout=60.0)
        if not result.ok:
            raise ServiceError(f"systemctl {' '.join(args)}: {result.stderr.strip()}")

    @property
    def server_argv(self) -> list[str] | None:
        """The coordination server's recorded command line, if this machine runs one."""
        argv = self._load().get("server_argv")
        return [str(a) for a in argv] if argv else None

    async def start_server_argv(self, argv: list[str]) -> None:
        """Start (or adopt, or restart with changed flags) the server with this exact argv:
        HA adds the store flags to what install-server recorded."""
        self._save(server_argv=argv)
        await self._start(argv)

    async def stop_server(self, *, forget: bool = False) -> None:
        """Stop the coordination server here; `forget` also drops it from the record, so a
        restarted backend does not bring it back (remove-server)."""
        argv = self.server_argv
        if self.manager == "systemd":
            if self.unit_path.exists():
                await self._systemctl("disable", "--now", UNIT_NAME)
        elif argv:
            await self.child.stop(argv)
        if forget:
            self._save(server_argv=None)

    def forget_k3s(self) -> None:
        """K3s was uninstalled: a restarted backend must not try to start it again."""
        self._save(k3s_role=None)

    async def resume(self) -> None:
        """After a backend restart: supervise (adopt) the server we started before, if any."""
        argv = self._load().get("server_argv")
        if argv and self.manager == "child":
            try:
                await self.child.start(list(argv))
                self.child.came_up = True  # it ran before: a later crash is only restarted
            except RunError as exc:
                log.error("cannot resume the coordination server: %s", exc)

    async def wait_healthy(self, url: str, ca_file: Path, timeout: float = 30.0) -> None:
        """Wait until GET URL/api/v1/health answers over TLS with the network's CA."""

        def verify() -> ssl.SSLContext | None:
            # The server writes its CA as it starts: until then there is nothing to check with.
            exists = ca_file.exists()
            return ssl.create_default_context(cafile=str(ca_file)) if exists else None

        await wait_until_up(
            "pcloud-server", f"{url}/api/v1/health", verify, timeout=timeout,
            daemon=self.child if self.manager == "child" else None, error=ServiceError,
        )  # fmt: skip
