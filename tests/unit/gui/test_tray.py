"""The tray menu follows events from /v1/events, and its actions call the local API."""

from __future__ import annotations

import asyncio

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QMenu

from pcloud.gui.errors import backend_not_running
from pcloud.gui.session import Session
from pcloud.gui.tray import Tray, menu_entries, tooltip
from tests.unit.gui.conftest import fixture_json, run, status, until
from tests.unit.gui.fake_backend import FakeBackend


def texts(menu: QMenu) -> list[str]:
    return [a.text() for a in menu.actions() if not a.isSeparator()]


def action(menu: QMenu, key: str):  # noqa: ANN201 - QAction
    return next(a for a in menu.actions() if a.data() == key)


def test_entries_for_each_state() -> None:
    running = menu_entries(status("running_peers"), None)
    keys = [e.key for e in running]
    assert keys == ["state", "disconnect", "self", "peers", "open", "logout", "quit"]
    assert running[0].text == "Connected"
    assert running[2].text == "This device: laptop - 10.0.0.3" and running[2].copy == "10.0.0.3"
    peers = running[3].children
    assert [p.text.split("\t")[0] for p in peers] == [
        "build-box",
        "nas",
        "pi-kitchen",
        "bob-laptop",
    ]  # online first
    assert [p.dot for p in peers] == [True, True, True, False]
    assert peers[1].copy == "10.0.0.1"

    stopped = menu_entries(status("stopped"), None)
    assert [e.key for e in stopped][:2] == ["state", "connect"]
    assert stopped[0].text == "Disconnected"

    login = menu_entries(status("needs_login"), None)
    assert [e.key for e in login] == ["state", "open", "login", "quit"]
    assert login[0].text == "Needs login"

    busy = menu_entries(status("stopped"), None, busy=True)
    assert not next(e for e in busy if e.key == "connect").enabled


def test_add_server_only_for_admin_on_a_client() -> None:
    st = status("running")
    assert "add-server" not in [e.key for e in menu_entries(st, None, is_admin=False)]
    assert "add-server" in [e.key for e in menu_entries(st, None, is_admin=True)]
    as_server = st.model_copy(update={"self": st.self.model_copy(update={"role": "server"})})
    assert "add-server" not in [e.key for e in menu_entries(as_server, None, is_admin=True)]


def test_backend_down_says_what_to_do() -> None:
    entries = menu_entries(None, backend_not_running())
    assert entries[0].text == "The PCloud backend is not running"
    assert "sudo systemctl start pcloud-backend" in entries[1].text
    assert [e.key for e in entries][-2:] == ["open", "quit"]
    assert tooltip(None, backend_not_running()) == "PCloud: The PCloud backend is not running"


def test_menu_follows_events_and_actions_call_the_api(
    loop: asyncio.AbstractEventLoop, backend: FakeBackend, session: Session
) -> None:
    backend.status = fixture_json("status_stopped.json")
    backend.route("POST", "/v1/up", lambda _b: (200, fixture_json("status_running.json")))
    backend.route("POST", "/v1/down", lambda _b: (200, fixture_json("status_stopped.json")))
    tray = Tray(session)
    session.start()

    async def scenario() -> None:
        await until(lambda: "Disconnected" in texts(tray.menu), what="first status event")
        assert "Connect" in texts(tray.menu)

        # The menu changes because an event arrived, not because anyone asked.
        backend.push_status(fixture_json("status_running_peers.json"))
        await until(lambda: "Connected" in texts(tray.menu), what="running event")
        assert "Disconnect" in texts(tray.menu)
        peers_menu = next(a.menu() for a in tray.menu.actions() if a.menu() is not None)
        assert [t.split("\t")[0] for t in texts(peers_menu)][:2] == ["build-box", "nas"]
        assert tray.icon.toolTip() == "PCloud: Connected (10.0.0.3)"

        action(tray.menu, "disconnect").trigger()
        await until(lambda: backend.calls("POST", "/v1/down"), what="POST /v1/down")
        await until(lambda: "Connect" in texts(tray.menu), what="stopped after down")
        action(tray.menu, "connect").trigger()
        await until(lambda: backend.calls("POST", "/v1/up"), what="POST /v1/up")
        await until(lambda: "Disconnect" in texts(tray.menu), what="running after up")

        action(tray.menu, "self").trigger()
        assert QGuiApplication.clipboard().text() == "10.0.0.3"
        sub = next(a.menu() for a in tray.menu.actions() if a.menu() is not None)
        next(a for a in sub.actions() if a.text().startswith("nas")).trigger()
        assert QGuiApplication.clipboard().text() == "10.0.0.2"  # the recorded running status

    run(loop, scenario())
    assert not [r for r in backend.requests if r[1] == "/v1/status"]  # no polling


def test_backend_missing_then_started(
    loop: asyncio.AbstractEventLoop, sock_path, session: Session
) -> None:
    tray = Tray(session)
    session.start()
    fake = FakeBackend(sock_path, fixture_json("status_running.json"))

    async def scenario() -> None:
        await until(
            lambda: "The PCloud backend is not running" in texts(tray.menu),
            what="not-running notice",
        )
        await fake.start()  # the feed retries on its own
        await until(lambda: "Connected" in texts(tray.menu), what="recovery", timeout=5)
        await fake.stop()

    run(loop, scenario())


def test_read_only_offers_no_changes_and_names_the_fix() -> None:
    entries = menu_entries(status("running"), None, read_only=True)
    assert any(e.text == "Read-only: run sudo usermod -aG pcloud $USER" for e in entries)
    for key in ("disconnect", "logout"):
        assert not next(e for e in entries if e.key == key).enabled
    assert next(e for e in entries if e.key == "self").enabled  # copying the IP still works
