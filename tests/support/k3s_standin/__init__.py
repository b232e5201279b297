"""A stand-in `k3s` for tests and the lab, where real K3s cannot run.

It is strict where K3s is strict and stricter where K3s is lenient: every flag and config key is
checked against flags.json (an unknown or removed one is refused with K3s's own message, naming
it), `server` serves TLS on its bind address and port, answers `/ping` and `/cacerts`, lets a
joining server or agent in only with the right token and only when the connection comes from
the joiner's own node IP (so in the lab a join has to cross the WireGuard mesh), keeps the member
list in its data dir, and answers the few `k3s kubectl` and `k3s etcd-snapshot` calls the driver
makes. It does none of the driver's work: it never writes the config, the token file or the
systemd unit; it only reads what the driver wrote, as K3s would.

It is test tooling and ships in no wheel. Run it as `python -m tests.support.k3s_standin ...`
from the repository root, or through a `k3s` wrapper script made by `write_wrapper()` (which works
from any directory) so the driver can install and run it like the real binary.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

MODULE = "tests.support.k3s_standin"
# `tests` is not installed: the stand-in imports from the repository root.
ROOT = Path(__file__).resolve().parents[3]


def exec_line(python: str | None = None) -> str:
    """The shell line that runs the stand-in with this command's arguments (for wrappers)."""
    interpreter = shlex.quote(python or sys.executable)
    return f'PYTHONPATH={shlex.quote(str(ROOT))} exec {interpreter} -m {MODULE} "$@"\n'


def argv(*args: str) -> list[str]:
    """The stand-in's command line; run it with `env()`."""
    return [sys.executable, "-m", MODULE, *args]


def env() -> dict[str, str]:
    """This process's environment with the repository root importable."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def write_wrapper(path: Path, python: str | None = None) -> Path:
    """Write an executable `k3s` script at `path` that runs the stand-in with `python`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + exec_line(python))
    path.chmod(0o755)
    return path
