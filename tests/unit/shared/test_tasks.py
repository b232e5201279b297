"""Cancelling tasks without losing a cancel: `pcloud.shared.tasks.cancel_and_wait`, the NAT
probe's wait for answers, and a guard that keeps the two 3.11 hazards out of product code."""

from __future__ import annotations

import ast
import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from pcloud.backend.nat import probe as nat_probe
from pcloud.server.reach.echo import start_echo
from pcloud.shared.tasks import cancel_and_wait

ROOT = Path(__file__).resolve().parents[3]
PRODUCT = ("backend", "server", "shared", "gui")


async def test_cancel_and_wait_ends_the_tasks_and_keeps_its_own_cancel() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    child = asyncio.create_task(forever())
    await started.wait()
    await cancel_and_wait(child, None)  # nobody cancelled us: no CancelledError here
    assert child.cancelled()

    # A child that ignores its first cancel keeps the caller waiting; the caller's own cancel
    # landing meanwhile must come out of cancel_and_wait, not be swallowed with the child's.
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()
            raise

    slow = asyncio.create_task(stubborn())
    await asyncio.sleep(0)  # let it reach its wait (one loop pass, not timing)
    stopper = asyncio.create_task(cancel_and_wait(slow))
    await asyncio.sleep(0)
    assert stopper.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    assert slow.done()


async def test_cancel_and_wait_raises_a_childs_error_after_ending_the_rest() -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    bad = asyncio.create_task(broken())
    await asyncio.sleep(0)
    other = asyncio.create_task(asyncio.Event().wait())
    with pytest.raises(RuntimeError, match="boom"):
        await cancel_and_wait(bad, other)
    assert other.cancelled()


async def test_a_probe_cancelled_as_its_answers_arrive_is_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hang seen in CI: the NAT monitor's probe got every answer in the same loop passes
    as the backend's stop cancelled it; 3.11's wait_for returned the answer and dropped the
    cancel, the monitor looped on, and the shutdown waited on it forever."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    echoes = await start_echo(["127.0.0.1"], ports=(port,))
    assert echoes, "the echo could not bind"
    task: asyncio.Task[Any] | None = None
    accepted: list[bool] = []
    original = nat_probe._Collector.datagram_received

    def answered(self: Any, data: bytes, addr: tuple[str, int]) -> None:
        original(self, data, addr)
        if self.done.is_set() and task is not None and not accepted:
            loop = asyncio.get_running_loop()
            # Two passes later: after the wait's inner task ended, before the prober resumes.
            loop.call_soon(loop.call_soon, lambda: accepted.append(task.cancel()))

    monkeypatch.setattr(nat_probe._Collector, "datagram_received", answered)
    try:
        task = asyncio.create_task(nat_probe.probe([("127.0.0.1", port)], timeout=5))
        await asyncio.wait([task], timeout=10)  # a deadline: returns when the probe ends
    finally:
        for transport in echoes:
            transport.close()
    assert accepted, "the answer never came"
    if accepted[0]:  # the cancel reached a running probe: it must end cancelled
        assert task.cancelled(), f"the cancel was lost: the probe returned {task.result()}"


def _hazards(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr == "wait_for":
            if isinstance(node.value, ast.Name) and node.value.id == "asyncio":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: asyncio.wait_for")
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "suppress":
            names = [ast.unparse(a) for a in node.args]
            if "asyncio.CancelledError" in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: suppress(CancelledError)")
    return found


def test_product_code_uses_the_cancel_safe_forms() -> None:
    """In 3.11, `asyncio.wait_for` returns a result that completes together with a cancel and
    drops the cancel, and `suppress(CancelledError)` around an awaited task drops a cancel of
    the waiter: use `asyncio.timeout` and `cancel_and_wait`."""
    found = [
        h for part in PRODUCT for f in sorted((ROOT / part).rglob("*.py")) for h in _hazards(f)
    ]
    assert not found, "\n".join(found)
