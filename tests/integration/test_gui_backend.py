"""The GUI against a REAL backend (`pcloud-backend --driver fake`, its real local API socket) and a
REAL coordination server: named login errors, live menu and peer table from /v1/events,
Connect/Disconnect, and the not-running notice when the backend goes away."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import qasync
from PySide6.QtWidgets import QApplication

from pcloud.backend.localapi.client import LocalClient
from pcloud.gui.dialogs.login import LoginDialog
from pcloud.gui.secrets import TokenStore
from pcloud.gui.session import Session
from pcloud.gui.tray import Tray
from pcloud.gui.views.main_window import MainWindow
from tests.support.coord import CoordServer, wait_until

PASSWORD = "correct horse battery"
BIN = Path(sys.executable).parent


class Backend:
    """A `pcloud-backend` process with the in-memory WireGuard driver."""

    def __init__(self, root: Path, name: str) -> None:
        self.socket = Path("/tmp") / f"pcg-it-{uuid.uuid4().hex[:10]}.sock"
        self.state = root / name
        self.log = root / f"{name}.log"
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Backend:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(BIN / "pcloud-backend"),
                    "--driver",
                    "fake",
                    "--socket",
                    str(self.socket),
                    "--state-dir",
                    str(self.state),
                    "--hostname",
                    self.name,
                    "--config",
                    "/dev/null",
                    "--log-level",
                    "DEBUG",
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_until(lambda: self.socket.exists(), 20, f"{self.name}'s socket")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def loop(qapp: QApplication) -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(event_loop)
    try:
        yield event_loop
    finally:
        for task in asyncio.all_tasks(event_loop):
            task.cancel()
        event_loop.close()
        asyncio.set_event_loop(None)


async def until(predicate: Any, timeout: float = 15, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def texts(tray: Tray) -> list[str]:
    return [a.text() for a in tray.menu.actions() if not a.isSeparator()]


def test_gui_against_the_real_backend(
    loop: asyncio.AbstractEventLoop, coord: CoordServer, tmp_path: Path
) -> None:
    coord.admin("users", "create", "alice", "--password-stdin", input=PASSWORD + "\n")
    key = json.loads(
        coord.admin("--json", "auth-keys", "create", "--user", "alice", "--reusable").stdout
    )["key"]
    device, peer = Backend(tmp_path, "gui-dev").start(), Backend(tmp_path, "nas").start()
    session = Session(LocalClient(device.socket, timeout=30), TokenStore(use_system=False))
    session.feed.retry_first_s, session.feed.retry_max_s = 0.1, 0.5
    tray, window = Tray(session), MainWindow(session)
    session.start()
    wrong_fp = coord.join_link[:-8] + "00000000"

    async def login(link: str, password: str) -> LoginDialog:
        dialog = LoginDialog(session)
        dialog.link.setText(link)
        dialog.username.setText("alice")
        dialog.password.setText(password)
        dialog.submit()
        assert dialog.task is not None
        await dialog.task
        return dialog

    async def scenario() -> None:
        await until(lambda: session.state == "NeedsLogin", what="NeedsLogin from the backend")
        assert session.needs_first_run
        assert texts(tray)[0] == "Needs login"

        dialog = await login(wrong_fp, PASSWORD)
        assert dialog.problem is not None and dialog.problem.kind == "wrong_fingerprint"
        dialog = await login(coord.join_link, "not the password")
        assert dialog.problem is not None and dialog.problem.kind == "wrong_password"
        unreachable = f"https://127.0.0.1:1/#fp=sha256:{coord.fingerprint}"
        dialog = await login(unreachable, PASSWORD)
        assert dialog.problem is not None and dialog.problem.kind == "server_unreachable"

        dialog = await login(coord.join_link, PASSWORD)
        assert dialog.problem is None
        await until(lambda: session.state == "Running", what="Running")
        me = session.status.self if session.status else None
        assert me is not None and me.hostname == "gui-dev"
        assert f"This device: gui-dev - {me.address}" in texts(tray)

        # Another device joins: the peer arrives by events (netmap long poll -> SSE), no polling.
        await LocalClient(peer.socket).login(coord.join_link, auth_key=key)
        await until(lambda: window.model.rowCount() == 1, what="peer in the table")
        assert window.model.peers()[0].hostname == "nas"

        next(a for a in tray.menu.actions() if a.data() == "disconnect").trigger()
        await until(lambda: session.state == "Stopped", what="Stopped")
        assert "Connect" in texts(tray)
        next(a for a in tray.menu.actions() if a.data() == "connect").trigger()
        await until(lambda: session.state == "Running", what="Running again")

        device.stop()
        await until(lambda: session.problem is not None, what="not-running notice")
        assert texts(tray)[0] == "The PCloud backend is not running"
        assert window.notice.command.text() == "sudo systemctl start pcloud-backend"
        device.start()  # the app heals by itself
        await until(lambda: session.state == "Running", what="recovery", timeout=20)

    try:
        loop.run_until_complete(asyncio.wait_for(scenario(), 120))
    finally:
        loop.run_until_complete(session.close())
        device.stop()
        peer.stop()
