"""Thin wrappers over `ip netns` / `ip -n`: create, list, inspect and delete named namespaces.

Every call names a namespace explicitly (`ip -n NS ...`), so nothing here can configure the root
network namespace by accident. Deleting a namespace first kills the processes inside it, because
a namespace with live processes would linger unnamed after `ip netns del`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence

PREFIX = "pcl-"
NETNS_DIR = "/run/netns"


class NetnsError(RuntimeError):
    """An `ip` command failed."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS` and return the result; raise NetnsError with stderr when it fails."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ip_in(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip -n NS ARGS`: the command acts inside namespace NS only."""
    if not ns:
        # An empty name would make `ip -n` fail, but refuse early so no code path can ever
        # degrade into configuring the root namespace.
        raise NetnsError("refusing to run ip without a namespace")
    return ip("-n", ns, *args, check=check)


def add(ns: str) -> None:
    """Create the named namespace with its loopback up."""
    if not ns.startswith(PREFIX):
        raise NetnsError(f"lab namespaces must start with {PREFIX!r}: {ns!r}")
    ip("netns", "add", ns)
    ip_in(ns, "link", "set", "lo", "up")


def list_names(prefix: str = PREFIX) -> list[str]:
    """Names of existing namespaces starting with `prefix`."""
    out = ip("netns", "list", check=False).stdout
    # Lines look like "pcl-ab12-lan (id: 3)" or just "pcl-ab12-lan".
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(prefix))


def exists(ns: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, ns))


def pids(ns: str) -> list[int]:
    """PIDs of the processes whose network namespace is `ns` (via `ip netns pids`)."""
    proc = ip("netns", "pids", ns, check=False)
    return sorted(int(p) for p in proc.stdout.split() if p.isdigit())


def pid_in_ns(pid: int, ns: str) -> bool:
    """True when process `pid` lives in namespace `ns` (guards against killing a reused PID)."""
    try:
        a = os.stat(f"/proc/{pid}/ns/net")
        b = os.stat(os.path.join(NETNS_DIR, ns))
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def kill_all_in(ns: str, *, grace: float = 1.0) -> list[int]:
    """SIGTERM every process in `ns`, SIGKILL what is left after `grace` seconds; return PIDs.

    This is the backstop for processes that escaped our bookkeeping (a daemon that forked, a child
    of a killed process), found by namespace rather than by name.
    """
    victims = pids(ns)
    for pid in victims:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_running(p) for p in victims):
        time.sleep(0.02)
    for pid in victims:
        if _running(pid):
            _signal(pid, signal.SIGKILL)
    # A supervisor being stopped may start a new child first (a backend relaunching the
    # wireguard-go that got our SIGTERM): kill whatever is still or newly there, by PID, until
    # the namespace is empty; else it outlives the namespace's name.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and (left := pids(ns)):
        for pid in left:
            if pid_in_ns(pid, ns) and _running(pid):
                _signal(pid, signal.SIGKILL)
                victims.append(pid)
        time.sleep(0.02)
    return victims


def delete(ns: str) -> None:
    """Kill whatever runs in `ns`, then delete it (no error when it is already gone)."""
    if not exists(ns):
        return
    kill_all_in(ns)
    ip("netns", "del", ns, check=False)


def delete_all(names: Sequence[str]) -> list[str]:
    """Delete several namespaces; return the ones that still exist afterwards."""
    for ns in names:
        delete(ns)
    return [ns for ns in names if exists(ns)]


def tools_missing() -> list[str]:
    """Executables the lab needs that are not on PATH."""
    return [t for t in ("ip", "unshare", "nsenter", "mount") if shutil.which(t) is None]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (zombies are dead, just not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
