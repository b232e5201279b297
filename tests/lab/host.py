"""One virtual host: a network namespace plus a private mount (and UTS) namespace.

A long-lived "holder" process per host owns the namespaces. It is started as
`ip netns exec NS unshare --mount --uts --propagation private sh -c SCRIPT`: `ip netns exec`
enters the host's network namespace and remounts /sys for it (wireguard-go and pyroute2 read
/sys/class/net), `unshare` gives it a mount namespace whose mounts never propagate back to the
machine, and SCRIPT bind-mounts per-host directories from the lab's work dir over the paths
PCloud uses (`/run/pcloud`, `/var/run/wireguard`, `/var/lib/pcloud`, `/etc/pcloud`,
`/etc/rancher`) and per-host copies of the machine's resolver files (`/etc/resolv.conf`,
`/etc/hosts`, where they are regular files) before it sleeps. Every later command enters the same namespaces with
`nsenter --target HOLDER --mount --net --uts`, so state survives process restarts and a test can
read a host's files from outside through `host.path()`.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from .process import Proc, kill_group
from .wait import wait_for

if TYPE_CHECKING:
    from .lab import Lab

# Paths that are private to each host, and the work-dir subdirectory backing each one.
PRIVATE_DIRS: dict[str, str] = {
    "/run/pcloud": "run-pcloud",
    "/run/wireguard": "run-wireguard",  # /var/run is a symlink to /run on Debian
    "/var/lib/pcloud": "var-lib-pcloud",
    "/etc/pcloud": "etc-pcloud",
    "/etc/rancher": "etc-rancher",
}
# Files private to each host: a copy of the machine's, taken when the host starts, bind-mounted
# over the original in the host's mount namespace only, so a backend that manages its host's
# resolver configuration (backend/dns) changes the copy, never the machine's file. A symlinked
# original (systemd-resolved's stub) is not mounted over: renaming onto the symlink would
# replace it in the machine's /etc; see `Host.private_files`.
PRIVATE_FILES: dict[str, str] = {
    "/etc/resolv.conf": "etc-files/resolv.conf",
    "/etc/hosts": "etc-files/hosts",
}
# Spellings that resolve to one of the above.
ALIASES: dict[str, str] = {"/var/run/": "/run/"}

DEFAULT_TIMEOUT = 30.0


class HostError(RuntimeError):
    """A host could not be created or a command in it failed to start."""


def _canonical(path: str) -> str:
    p = str(PurePosixPath(path))
    for alias, real in ALIASES.items():
        if p + "/" == alias or p.startswith(alias):
            p = real + p[len(alias) :]
    return p.rstrip("/") or "/"


def _real_mountpoint(inside: str) -> str:
    """Where to mount on this machine: follow symlinks such as /var/run -> /run."""
    return os.path.realpath(inside)


class Host:
    """A virtual machine-like host in the lab. Create it with `Lab.add_host`."""

    def __init__(
        self,
        lab: Lab,
        name: str,
        ns: str,
        ip: str,
        prefixlen: int,
        *,
        lan_ns: str | None = None,
        public_ip: str | None = None,
    ) -> None:
        self.lab = lab
        self.name = name
        self.ns = ns
        self.ip = ip
        self.prefixlen = prefixlen
        # For a host behind NAT, the namespace and address facing the LAN are the router's.
        self.lan_ns = lan_ns or ns
        self.public_ip = public_ip or ip
        self.behind_nat = lan_ns is not None
        self.root = lab.workdir / "hosts" / name
        self.holder_pid = 0
        self.private_files: list[str] = []  # the PRIVATE_FILES this host has its own copy of
        self._holder: subprocess.Popen[bytes] | None = None

    # ----------------------------------------------------------------- lifecycle

    def start_holder(self, timeout: float = 10.0) -> None:
        """Start the namespace-holding process and wait until its mounts are in place."""
        self.root.mkdir(parents=True, exist_ok=True)
        lines = ["set -e", f"echo {shlex.quote(self.name)} > /proc/sys/kernel/hostname"]
        # The copied mount table holds /run/netns/* bind mounts of every namespace on the
        # machine; dropping them here keeps this host from pinning other labs' namespaces alive.
        lines.append("umount -l /run/netns 2>/dev/null || true")
        for inside, sub in PRIVATE_DIRS.items():
            src = self.root / sub
            src.mkdir(parents=True, exist_ok=True)
            target = _real_mountpoint(inside)
            # The mount point must exist on the shared filesystem; an empty directory is all
            # the machine ever sees of a host's private state.
            os.makedirs(target, exist_ok=True)
            lines.append(f"mount --bind {shlex.quote(str(src))} {shlex.quote(target)}")
        self.private_files = []
        for inside, sub in PRIVATE_FILES.items():
            if os.path.islink(inside) or not os.path.isfile(inside):
                continue
            src = self.root / sub
            if not src.exists():  # a restarted holder keeps the host's own copy
                src.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(inside, src)
                shutil.copymode(inside, src)
            lines.append(f"mount --bind {shlex.quote(str(src))} {shlex.quote(inside)}")
            self.private_files.append(inside)
        ready = self.root / "holder.ready"
        ready.unlink(missing_ok=True)
        lines.append(f"echo $$ > {shlex.quote(str(ready))}.tmp")
        lines.append(f"mv {shlex.quote(str(ready))}.tmp {shlex.quote(str(ready))}")
        lines.append("exec sleep infinity")
        argv = [
            "ip", "netns", "exec", self.ns,
            "unshare", "--mount", "--uts", "--propagation", "private",
            "sh", "-c", "\n".join(lines),
        ]  # fmt: skip
        log_path = self.lab.log_dir / f"{self.name}-holder.log"
        with open(log_path, "ab") as log:
            self._holder = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.holder_pid = self._holder.pid

        def is_ready() -> bool:
            if self._holder is not None and self._holder.poll() is not None:
                raise HostError(
                    f"holder of {self.name} exited {self._holder.returncode}: "
                    f"{log_path.read_text(errors='replace')[-2000:]}"
                )
            return ready.exists()

        wait_for(is_ready, timeout=timeout, what=f"namespace holder of {self.name}")
        # `ip netns exec` and `unshare` exec rather than fork, so the shell that wrote its PID is
        # the process we started; anything else means our bookkeeping would target the wrong PID.
        written = int(ready.read_text().strip())
        if written != self.holder_pid:
            raise HostError(f"holder PID mismatch for {self.name}: {written} != {self.holder_pid}")

    def stop_holder(self) -> None:
        """Kill the holder by PID; its mount namespace disappears with its last process."""
        if self._holder is not None:
            kill_group(self.holder_pid, signal.SIGKILL)
            try:
                self._holder.wait(5.0)
            except subprocess.TimeoutExpired:
                pass

    # ----------------------------------------------------------------- commands

    def enter_argv(self, argv: Sequence[str], *, cwd: str | None = None) -> list[str]:
        """The argv that runs `argv` inside this host's network, mount and UTS namespaces."""
        if not self.holder_pid:
            raise HostError(f"host {self.name} is not running")
        return [
            "nsenter", f"--target={self.holder_pid}", "--mount", "--net", "--uts",
            f"--wd={cwd or os.getcwd()}", "--", *argv,
        ]  # fmt: skip

    @staticmethod
    def _env(env: Mapping[str, str] | None) -> dict[str, str]:
        # Callers usually add a few variables (PCLOUD_*); keeping PATH and friends avoids
        # surprising "command not found" inside hosts.
        return {**os.environ, **(env or {})}

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        input: str | None = None,
        cwd: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` to completion inside the host and capture its output (text).

        On timeout the whole process group is killed, so nothing it started lingers.
        """
        full = self.enter_argv(argv, cwd=cwd)
        popen = subprocess.Popen(
            full,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self._env(env),
            start_new_session=True,
        )
        try:
            out, err = popen.communicate(input, timeout=timeout)
        except BaseException:
            kill_group(popen.pid, signal.SIGKILL)
            popen.communicate()
            raise
        result = subprocess.CompletedProcess(list(argv), popen.returncode, out, err)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, list(argv), out, err)
        return result

    async def arun(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        # The subprocess's own deadline (it is killed on expiry), not an await timeout.
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`run` from async code, in a worker thread so the event loop keeps running."""
        return await asyncio.to_thread(
            self.run, argv, env=env, check=check, timeout=timeout, input=input
        )

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Proc:
        """Start `argv` in the background inside the host; the lab stops it at teardown."""
        log_path = self.lab.log_dir / f"{self.name}-{name}.log"
        n = 1
        while log_path.exists() and any(p.log_path == log_path for p in self.lab.procs):
            n += 1
            log_path = self.lab.log_dir / f"{self.name}-{name}.{n}.log"
        proc = Proc(name, self.name, self.enter_argv(argv), log_path, env=self._env(env))
        self.lab.register(proc)
        return proc

    def pcloud_argv(self, *args: str) -> list[str]:
        """argv of the venv's `pcloud` CLI talking to this host's backend socket."""
        bindir = Path(sys.executable).parent
        return [str(bindir / "pcloud"), "--socket", "/run/pcloud/backend.sock", *args]

    def pcloud(
        self,
        *args: str,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `pcloud ARGS` inside the host against its own backend."""
        return self.run(self.pcloud_argv(*args), check=check, timeout=timeout, env=env)

    # ----------------------------------------------------------------- files and addresses

    def path(self, inside: str | os.PathLike[str]) -> Path:
        """Map a path inside one of the host's private directories to its real location.

        Raises ValueError for paths that are not private to the host (they are the machine's).
        """
        p = _canonical(os.fspath(inside))
        if p in self.private_files:
            return self.root / PRIVATE_FILES[p]
        for mount, sub in PRIVATE_DIRS.items():
            if p == mount or p.startswith(mount + "/"):
                return self.root / sub / p[len(mount) :].lstrip("/")
        private = list(PRIVATE_DIRS) + self.private_files
        raise ValueError(f"{inside} is not one of {self.name}'s private paths {private}")

    def set_lan_address(self, new_ip: str) -> None:
        """Move the host (or, behind NAT, its router) to another LAN address.

        For endpoint-change scenarios: the old address disappears at once, as when a DHCP lease
        changes, and peers must learn the new endpoint.
        """
        self.lab.move_address(self, new_ip)

    def __repr__(self) -> str:
        nat = f" via NAT {self.public_ip}" if self.behind_nat else ""
        return f"<Host {self.name} {self.ip}{nat} ns={self.ns} holder={self.holder_pid}>"
