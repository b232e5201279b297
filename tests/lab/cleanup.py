"""`python -m tests.lab.cleanup [--run RUN]`: remove what a crashed lab left behind.

Finds namespaces named `pcl-*` (or `pcl-RUN-*`), kills the processes whose network namespace is
one of them (found with `ip netns pids`, never by process name), deletes the namespaces and prints
each removal. Nothing else on the machine is touched. Logs under /tmp/pcloud-lab are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import netns


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:120]


def cleanup(prefix: str = netns.PREFIX, *, dry_run: bool = False) -> list[str]:
    """Remove namespaces starting with `prefix` and their processes; return report lines."""
    if not prefix.startswith(netns.PREFIX):
        raise ValueError(f"prefix must start with {netns.PREFIX!r}")
    report: list[str] = []
    for ns in netns.list_names(prefix):
        for pid in netns.pids(ns):
            report.append(f"{'would kill' if dry_run else 'killed'} pid {pid} in {ns}: "
                          f"{_cmdline(pid)}")  # fmt: skip
        if dry_run:
            report.append(f"would delete namespace {ns}")
            continue
        netns.delete(ns)
        report.append(f"deleted namespace {ns}" if not netns.exists(ns)
                      else f"FAILED to delete namespace {ns}")  # fmt: skip
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.cleanup", description=__doc__)
    parser.add_argument("--run", help="only this run id (namespaces pcl-RUN-*)")
    parser.add_argument("--dry-run", action="store_true", help="only print what would go")
    args = parser.parse_args(argv)
    prefix = f"{netns.PREFIX}{args.run}-" if args.run else netns.PREFIX
    report = cleanup(prefix, dry_run=args.dry_run)
    print("\n".join(report) if report else f"nothing to clean ({prefix}*)")
    return 1 if any(line.startswith("FAILED") for line in report) else 0


if __name__ == "__main__":
    sys.exit(main())
