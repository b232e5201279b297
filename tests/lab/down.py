"""`python -m tests.lab.down`: tear down a lab left running by `Lab(keep=True)`.

Reads /tmp/pcloud-lab/current.json, stops the recorded processes by PID (only those still inside
one of the lab's namespaces, so a reused PID is never hit), then kills whatever else lives in
those namespaces, deletes them and removes the state file. Logs stay on disk.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from . import netns, state
from .process import kill_group


def down(path: Path) -> list[str]:
    data = state.read(path)
    namespaces: list[str] = data.get("namespaces", [])
    report: list[str] = []
    owned = [
        p for p in data.get("procs", [])
        if any(netns.pid_in_ns(p["pid"], ns) for ns in namespaces)
    ]  # fmt: skip
    for p in owned:
        kill_group(p["pid"], signal.SIGTERM)
        report.append(f"stopped {p['host']}/{p['name']} pid {p['pid']}")
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(
        netns.pid_in_ns(p["pid"], ns) for p in owned for ns in namespaces
    ):
        time.sleep(0.05)
    for p in owned:
        kill_group(p["pid"], signal.SIGKILL)
    for ns in reversed(namespaces):
        if not netns.exists(ns):
            continue
        netns.delete(ns)
        report.append(f"deleted namespace {ns}" if not netns.exists(ns)
                      else f"FAILED to delete namespace {ns}")  # fmt: skip
    state.remove_if_run(path, data.get("run_id", ""))
    report.append(f"lab {data.get('run_id')} is down; logs kept in {data.get('log_dir')}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.down", description=__doc__)
    parser.add_argument("--state", type=Path, default=state.state_path())
    args = parser.parse_args(argv)
    report = down(args.state)
    print("\n".join(report))
    return 1 if any(line.startswith("FAILED") for line in report) else 0


if __name__ == "__main__":
    sys.exit(main())
