"""`python -m tests.lab.shell HOST [CMD ...]`: enter a host of a kept lab.

Joins the host's network, mount and UTS namespaces (through its holder process, recorded in
/tmp/pcloud-lab/current.json) and runs bash, or CMD when given, with the venv's programs
(`pcloud`, ...) on PATH. The prompt shows the host's name
because each host has its own hostname.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import netns, state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.shell", description=__doc__)
    parser.add_argument("host")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="default: bash")
    parser.add_argument("--state", type=Path, default=state.state_path())
    args = parser.parse_args(argv)
    data = state.read(args.state)
    host = data["hosts"].get(args.host)
    if host is None:
        print(f"no host {args.host!r}; hosts: {', '.join(data['hosts'])}", file=sys.stderr)
        return 2
    pid = int(host["holder_pid"])
    # The recorded PID is only trusted while it still sits in the host's namespace.
    if not netns.pid_in_ns(pid, host["ns"]):
        print(f"host {args.host} is not running (holder {pid} gone)", file=sys.stderr)
        return 1
    command = args.command or ["bash"]
    # The lab's programs (`pcloud`, `pcloud-server`, ...) live in the venv that runs this
    # module; put it first on PATH so `pcloud status` works inside the host as the README says.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    os.execvp("nsenter", ["nsenter", f"--target={pid}", "--mount", "--net", "--uts",
                          f"--wd={os.getcwd()}", "--", *command])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
