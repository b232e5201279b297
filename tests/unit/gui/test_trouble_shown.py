"""Seeing trouble in the GUI (issue 18): a coordination server that does not answer is its own
state in the header, the tray menu, tooltip and icon, with the reason in full (not cut in the
status bar); a disconnected device lists no peers as online; a GUI started without a backend
logs a warning naming the socket and the fix."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QCoreApplication, QEvent

from pcloud.gui.format import icon_key
from pcloud.gui.icons import icon_path, state_icon
from pcloud.gui.session import Session
from pcloud.gui.tray import menu_entries, tooltip
from pcloud.gui.views.main_window import MainWindow
from tests.unit.gui.conftest import fixture_json, run, status, until
from tests.unit.gui.fake_backend import FakeBackend

REASON = (
    "coordination server unreachable: https://192.168.0.111:8443 accepted the connection but "
    "did not answer in time (the coordination server may be hung or overloaded)"
)


def unreachable(name: str = "running_peers", seconds_ago: int = 35) -> dict[str, Any]:
    data: dict[str, Any] = fixture_json(f"status_{name}.json")
    since = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    data.update(error=REASON, control_unreachable_since=since.isoformat())
    return data


def test_tray_shows_the_unreachable_state_and_its_own_icon() -> None:
    from pcloud.backend.localapi.schemas import Status

    st = Status.model_validate(unreachable())
    entries = menu_entries(st, None)
    assert entries[0].text.startswith("Connected, coordination server unreachable since ")
    assert entries[0].text.endswith("(35 s ago)")
    assert entries[1].key == "hint" and entries[1].text == REASON
    assert tooltip(st, None).startswith("PCloud: Connected, coordination server unreachable")
    assert icon_path(icon_key(st) or "").exists()
    assert state_icon(icon_key(st)).cacheKey() != state_icon("Running").cacheKey()
    assert state_icon(icon_key(status("running_peers"))).cacheKey() == (
        state_icon("Running").cacheKey()
    )


def test_disconnected_lists_no_peers_as_online() -> None:
    stopped = status("stopped")
    assert any(p.online for p in stopped.peers)  # the server's last word, stale while down
    assert "peers" not in [e.key for e in menu_entries(stopped, None)]


def test_window_header_notice_and_status_bar(
    loop: asyncio.AbstractEventLoop, backend: FakeBackend, session: Session
) -> None:
    window = MainWindow(session)
    window.show()
    session.start()

    async def scenario() -> None:
        backend.push_status(unreachable())
        await until(lambda: not window.server_notice.isHidden(), what="the outage banner")
        assert window.state_text.text().startswith(
            "Connected, coordination server unreachable since "
        )
        assert REASON in window.server_notice.detail.text()
        # The status bar keeps short words that fit; the reason is in the banner.
        label = window.status_state
        assert label.text() == "Connected" and label.toolTip() == REASON
        assert label.fontMetrics().horizontalAdvance(label.text()) <= label.width()
        backend.push_status(fixture_json("status_running_peers.json"))  # it answers again
        await until(lambda: window.server_notice.isHidden(), what="the banner to go")
        assert window.state_text.text() == "Connected"
        assert window.model.rowCount() == 4
        backend.push_status(fixture_json("status_stopped.json"))  # `pcloud down`
        await until(lambda: window.state_text.text() == "Disconnected", what="Disconnected")
        assert window.model.rowCount() == 0

    try:
        run(loop, scenario())
    finally:
        # Gone now, while its session and loop live, not at a random later garbage collection.
        window.close()
        window.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def test_no_backend_logs_the_socket_and_the_fix(
    loop: asyncio.AbstractEventLoop, sock_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pcloud.backend.localapi.client import LocalClient
    from pcloud.gui.secrets import TokenStore

    caplog.set_level(logging.WARNING, logger="pcloud.gui.feed")
    s = Session(LocalClient(sock_path, timeout=2), TokenStore(use_system=False))
    s.feed.retry_first_s, s.feed.retry_max_s = 0.05, 0.1
    tries: list[object] = []
    s.feed.unavailable.connect(tries.append)
    try:
        s.start()
        # Several failed attempts: the warning is still said once.
        run(loop, until(lambda: len(tries) >= 3, what="three attempts"))
    finally:
        run(loop, s.close())
    said = [r.getMessage() for r in caplog.records if r.name == "pcloud.gui.feed"]
    assert len(said) == 1, said
    assert str(sock_path) in said[0] and "sudo systemctl start pcloud-backend" in said[0]
