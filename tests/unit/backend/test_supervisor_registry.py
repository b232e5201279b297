"""One supervisor per daemon for the backend's whole life (issue 12).

The etcd member that `ha enable` starts and the one `remove-server` removes are driven through
different job objects; both must reach the same supervisor, or the removal's stop looks like a
crash to the first supervisor, which relaunches the member on its wiped data dir as a new cluster.
These tests run a real child process (a sleeper standing in for etcd) under the real supervisor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pcloud.backend.config import BackendSettings
from pcloud.backend.ha.member import LocalMember
from pcloud.backend.server_supervisor import Services
from pcloud.backend.services.service import ChildService

# The supervisor's first restart comes 1 s after a crash: holding 2.5 s covers it twice over.
HOLD_S = 2.5


def backend_at(state_dir: Path) -> Any:
    settings = BackendSettings(state_dir=state_dir, hostname="rpi111", system_root=state_dir)
    services = Services(state_dir, manager="child")
    return SimpleNamespace(
        settings=settings, services=services, node=SimpleNamespace(address="10.0.0.1")
    )


def running(marker: str) -> list[int]:
    """PIDs of live processes whose command line holds `marker` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in cmd and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


async def until(pred: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value


async def holds(pred: Callable[[], bool], seconds: float, what: str) -> None:
    """`pred` stays true for `seconds`: fails at the first moment it does not."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert pred(), what
        await asyncio.sleep(0.05)


@pytest.fixture
async def member_argv(tmp_path: Path) -> AsyncIterator[list[str]]:
    marker = f"--name=etcd-standin-{tmp_path.name}"
    argv = [sys.executable, "-c", "import time; time.sleep(600)", marker]
    yield argv
    for pid in running(marker):  # nothing of a failed test outlives it
        os.kill(pid, signal.SIGKILL)


async def test_every_job_reaches_the_same_supervisor(tmp_path: Path) -> None:
    backend = backend_at(tmp_path)
    first, second = LocalMember(backend), LocalMember(backend)
    assert first.service is second.service
    assert backend.services.supervisor("etcd") is first.service
    assert backend.services.supervisor("pcloud-server") is backend.services.child


async def test_member_removed_by_another_job_stays_stopped_across_a_restart(
    tmp_path: Path, member_argv: list[str]
) -> None:
    marker = member_argv[-1]
    backend = backend_at(tmp_path)
    enabled = LocalMember(backend)  # what `ha enable` made
    await enabled.start(member_argv)
    pid = await until(lambda: running(marker), "the member to run")
    removal = LocalMember(backend)  # what `remove-server` makes, later
    await removal.remove()
    assert not running(marker), f"still running after the removal: {pid}"
    await holds(lambda: not running(marker), HOLD_S, "the removed member was relaunched")
    assert not removal.wanted and removal.load().get("argv") is None

    # A restarted backend (new registry, same state dir) does not bring it back either.
    again = backend_at(tmp_path)
    await LocalMember(again).resume()
    await holds(lambda: not running(marker), HOLD_S, "a restarted backend resumed the member")


async def test_a_member_leaving_is_not_restarted_when_it_exits(
    tmp_path: Path, member_argv: list[str]
) -> None:
    marker = member_argv[-1]
    backend = backend_at(tmp_path)
    member = LocalMember(backend)
    await member.start(member_argv)
    service = member.service
    assert isinstance(service, ChildService)
    try:
        # Control: a crash of a wanted member is restarted (the supervisor works at all).
        (first,) = await until(lambda: running(marker), "the member to run")
        os.kill(first, signal.SIGKILL)
        await until(lambda: [p for p in running(marker) if p != first], "the restart", 5.0)
        # Removed from its cluster, etcd exits on its own: that is no crash.
        await member.leaving()
        (second,) = running(marker)
        os.kill(second, signal.SIGTERM)
        await until(lambda: not running(marker), "the member to exit")
        await holds(lambda: not running(marker), HOLD_S, "a leaving member was restarted")
        # A backend restarting while the removal was under way stops what is left of it.
        await member.start(member_argv)
        await until(lambda: running(marker), "the member to run again")
        member.save(wanted=False)
        await LocalMember(backend_at(tmp_path)).resume()
        await until(lambda: not running(marker), "resume to stop a member being removed")
    finally:
        await service.stop(member_argv)
