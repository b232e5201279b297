"""Waiting on and reaping processes by PID, for every supervisor in the backend, and waiting
until a daemon that was started answers on its URL (`wait_until_up`).

Both the WireGuard userspace driver and the service supervisor (coordination server, K3s) watch
processes they may not have started themselves (adopted after a backend restart), so exits are
observed through a pidfd rather than `waitpid` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import time
from collections.abc import Callable
from typing import Protocol

import httpx


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
        async with asyncio.timeout(within):
            await gone
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


class NotUp(RuntimeError):
    """A daemon did not come up: it died first, or it did not answer in time."""


class Daemon(Protocol):
    """What `wait_until_up` needs of a supervised daemon (a ChildService or SystemdService)."""

    came_up: bool

    def died(self) -> str | None: ...

    def log_tail(self) -> str: ...


def _ok(answer: httpx.Response) -> bool:
    return answer.status_code == 200


async def wait_until_up(
    what: str,
    url: str,
    verify: Callable[[], ssl.SSLContext | bool | None],
    *,
    timeout: float,
    daemon: Daemon | None,
    error: Callable[[str], Exception] = NotUp,
    healthy: Callable[[httpx.Response], bool] = _ok,
) -> None:
    """Poll GET `url` until `healthy(answer)` (default: a 200), for the K3s API, pcloud-server
    and etcd alike, then mark `daemon` as having come up (a later crash is only restarted).

    `verify()` is the TLS context to check the daemon with, None while it cannot be made yet (a
    CA file the daemon writes as it starts). Raises `error(message)` as soon as the daemon died,
    or with the last answer and its log's tail once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        reason = daemon.died() if daemon is not None else None
        if reason is not None:
            raise error(f"{what} did not come up: {reason}")
        context = verify()
        if context is not None:
            try:
                async with httpx.AsyncClient(verify=context, timeout=2.0) as client:
                    answer = await client.get(url)
                if healthy(answer):
                    break
                last = f"HTTP {answer.status_code}"
            except (httpx.HTTPError, ValueError) as exc:
                last = str(exc) or type(exc).__name__
        if time.monotonic() > deadline:
            tail = daemon.log_tail() if daemon is not None else ""
            raise error(f"{what} at {url} did not answer within {timeout:.0f}s ({last}); {tail}")
        await asyncio.sleep(0.2)  # polling a daemon that is starting: it offers no signal
    if daemon is not None:
        daemon.came_up = True
