"""A process's figures from /proc, for the benchmarks: CPU seconds so far and resident memory."""

from __future__ import annotations

import math
import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (utime + stime of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    """A memory line of /proc/PID/status in MiB (VmRSS now, VmHWM the peak); NaN if absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return math.nan
