"""GUI test harness: offscreen Qt, one qasync loop per test, recorded local-API fixtures.

Tests here are plain (sync) functions that drive coroutines through `run(loop, coro)` on a
qasync loop, rather than pytest-asyncio's loop: on that loop QTimers never fire because the Qt
event loop never runs (research/gui.md, pitfall 4).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported anywhere

import asyncio
import json
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import qasync
from PySide6.QtWidgets import QApplication

from pcloud.backend.localapi.client import LocalClient
from pcloud.backend.localapi.schemas import Status
from pcloud.gui.secrets import TokenStore
from pcloud.gui.session import Session
from tests.unit.gui.fake_backend import FakeBackend

FIXTURES = Path(__file__).parent / "fixtures"
T = TypeVar("T")


def fixture_json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def status(name: str) -> Status:
    return Status.model_validate(fixture_json(f"status_{name}.json"))


def run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def until(predicate: Any, timeout: float = 5, what: str = "condition") -> None:
    """Waits on the running loop (so Qt and asyncio both progress) for `predicate()`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture(autouse=True)
def _qt_app(qapp: QApplication) -> QApplication:
    """Every GUI test gets the one QApplication (icons and pixmaps need it even without a loop)."""
    return qapp


@pytest.fixture
def loop(qapp: QApplication) -> Iterator[asyncio.AbstractEventLoop]:
    qapp.setQuitOnLastWindowClosed(False)
    event_loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(event_loop)
    try:
        yield event_loop
    finally:
        pending = [t for t in asyncio.all_tasks(event_loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            event_loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        event_loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[Path]:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp paths can be longer.
    short = Path("/tmp") / f"pcg-{os.getpid()}-{abs(hash(tmp_path)) % 10**8}.sock"
    yield short
    short.unlink(missing_ok=True)


@pytest.fixture
def backend(loop: asyncio.AbstractEventLoop, sock_path: Path) -> Iterator[FakeBackend]:
    fake = FakeBackend(sock_path, fixture_json("status_running.json"))
    run(loop, fake.start())
    try:
        yield fake
    finally:
        run(loop, fake.stop())


@pytest.fixture
def session(loop: asyncio.AbstractEventLoop, sock_path: Path) -> Iterator[Session]:
    """A session on the socket path, keyring off (tokens in memory), fast reconnects."""
    s = Session(LocalClient(sock_path, timeout=10), TokenStore(use_system=False))
    s.feed.retry_first_s, s.feed.retry_max_s = 0.05, 0.2
    try:
        yield s
    finally:
        run(loop, s.close())
