"""Terminating a supervised process: SIGTERM, then SIGKILL after the grace time, always reaped."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from pcloud.backend.proc import terminate


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def spawn(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def gone_for_good(pid: int) -> bool:
    """Reaped: no longer in the process table at all."""
    return not os.path.exists(f"/proc/{pid}")


async def test_a_process_that_obeys_sigterm_is_gone_and_reaped() -> None:
    child = spawn("sleep", "100")
    started = time.monotonic()
    await terminate(child.pid, grace=10.0)
    assert gone_for_good(child.pid)
    assert time.monotonic() - started < 5.0  # it did not wait out the grace time


async def test_one_that_ignores_sigterm_is_killed_after_the_grace_time() -> None:
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    child = spawn(sys.executable, "-c", f"{ignore}; print('ready', flush=True); time.sleep(100)")
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    started = time.monotonic()
    await terminate(child.pid, grace=0.3)
    assert gone_for_good(child.pid) and not running(child.pid)
    assert time.monotonic() - started >= 0.3


async def test_an_already_gone_process_is_fine() -> None:
    child = spawn("true")
    child.communicate()
    await terminate(child.pid, grace=0.1)  # no error for a PID that no longer exists
    assert gone_for_good(child.pid)
