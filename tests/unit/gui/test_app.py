"""App wiring: no tray means the window, the wizard on first run, root refused, one instance."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest
from PySide6.QtWidgets import QSystemTrayIcon

from pcloud.backend.localapi.client import LocalClient
from pcloud.gui.app import PCloudApp
from pcloud.gui.instance import SingleInstance
from pcloud.gui.secrets import TokenStore
from tests.unit.gui.conftest import fixture_json, run, until
from tests.unit.gui.fake_backend import FakeBackend


def test_offscreen_has_no_tray_so_the_window_opens(
    loop: asyncio.AbstractEventLoop, backend: FakeBackend
) -> None:
    assert not QSystemTrayIcon.isSystemTrayAvailable()
    app = PCloudApp(LocalClient(backend.path), TokenStore(use_system=False), start_hidden=True)
    app.start()
    assert app.tray is None and app.window.isVisible() and not app.window.has_tray
    run(loop, until(lambda: app.session.state == "Running", what="status"))
    assert app.wizard is None  # logged in: no first-run wizard
    run(loop, app.shutdown())


def test_first_run_opens_the_wizard_once(
    loop: asyncio.AbstractEventLoop, backend: FakeBackend
) -> None:
    backend.status = fixture_json("status_needs_login.json")
    app = PCloudApp(LocalClient(backend.path), TokenStore(use_system=False), use_tray=False)
    app.start()
    run(loop, until(lambda: app.wizard is not None, what="wizard"))
    assert app.wizard is not None and app.wizard.isVisible()
    app.wizard.accept()  # "Join an existing PCloud" is the default choice
    assert app.login_dialog is not None and app.login_dialog.isVisible()
    backend.push_status(fixture_json("status_needs_login.json"))
    run(loop, asyncio.sleep(0.1))
    assert not app.wizard.isVisible()  # offered once, not nagging on every event
    run(loop, app.shutdown())


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is about root")
def test_refuses_root_without_the_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pcloud.gui"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert result.returncode == 2
    assert "refusing to run as root" in result.stderr


def test_single_instance(loop: asyncio.AbstractEventLoop) -> None:
    name = f"pcloud-gui-test-{uuid.uuid4().hex[:8]}"
    first = SingleInstance(name)
    assert not first.notify_running(100)
    assert first.listen()
    shown: list[bool] = []
    first.show_requested.connect(lambda: shown.append(True))
    second = SingleInstance(name)

    async def scenario() -> None:
        # notify_running blocks briefly on its own socket; run it off the loop so the first
        # instance (on this loop) can accept.
        answered = await asyncio.to_thread(second.notify_running, 2000)
        assert answered
        await until(lambda: shown == [True], what="show request")

    run(loop, scenario())
    assert first.server is not None
    first.server.close()
