"""A stand-in `k3s` for tests and the lab, where real K3s cannot run.

It is strict where K3s is strict and stricter where K3s is lenient: every flag and config key is
checked against flags.json (an unknown or removed one is refused with K3s's own message, naming
it), `server` serves TLS on its bind address and port, answers `/ping` and `/cacerts`, lets a
joining server or agent in only with the right token and only when the connection comes from
the joiner's own node IP (so in the lab a join has to cross the WireGuard mesh), keeps the member
list in its data dir, and answers the few `k3s kubectl` and `k3s etcd-snapshot` calls the driver
makes. It does none of the driver's work: it never writes the config, the token file or the
systemd unit; it only reads what the driver wrote, as K3s would.

Run it as `python -m pcloud.backend.k3s.standin ...`, or through a `k3s` wrapper script made by
`write_wrapper()` so the driver can install and run it like the real binary.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

MODULE = "pcloud.backend.k3s.standin"


def write_wrapper(path: Path, python: str | None = None) -> Path:
    """Write an executable `k3s` script at `path` that runs the stand-in with `python`."""
    interpreter = python or sys.executable
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec {shlex.quote(interpreter)} -m {MODULE} "$@"\n')
    path.chmod(0o755)
    return path
