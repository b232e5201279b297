"""Waiting on and reaping processes by PID, for every supervisor in the backend.

Both the WireGuard userspace driver and the service supervisor (coordination server, K3s) watch
processes they may not have started themselves (adopted after a backend restart), so exits are
observed through a pidfd rather than `waitpid` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal


async def wait_pid_exit(pid: int, within: float | None = None) -> bool:
    """Wait until `pid` is gone (pidfd readable), for children and adopted processes alike.
    True if it exited, False on timeout."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(pidfd, ready)
    try:
        await asyncio.wait_for(gone, within)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def reap(pid: int) -> int | None:
    """Exit code of `pid` if it was our child (so it does not stay a zombie), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done else None


async def terminate(pid: int, grace: float = 5.0) -> None:
    """SIGTERM `pid`, SIGKILL it if it outlives `grace` seconds, wait until it is gone and reap
    it if it was our child. A process that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not await wait_pid_exit(pid, grace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        await wait_pid_exit(pid, 5.0)
    reap(pid)
