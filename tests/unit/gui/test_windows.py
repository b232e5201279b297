"""Main window, admin pages and the add-server dialog, driven through the fake backend."""

from __future__ import annotations

import asyncio
from typing import Any

from PySide6.QtGui import QGuiApplication

from pcloud.backend.localapi.schemas import Job
from pcloud.gui.dialogs.add_server import AddServerDialog
from pcloud.gui.models.peer_table import HOSTNAME
from pcloud.gui.session import Session
from pcloud.gui.views.main_window import MainWindow
from tests.unit.gui.conftest import fixture_json, run, until
from tests.unit.gui.fake_backend import FakeBackend

NODES = [
    {
        "node_id": 1,
        "hostname": "nas",
        "user": "alice",
        "role": "server",
        "tags": [],
        "address": "10.0.0.1",
        "online": True,
    },
    {
        "node_id": 2,
        "hostname": "laptop",
        "user": "alice",
        "role": "client",
        "tags": [],
        "address": "10.0.0.3",
        "online": True,
    },
]
USERS = [{"username": "alice", "admin": True, "created_at": "2026-11-25T15:00:00Z"}]


def coord_router(seen: list[dict[str, Any]]) -> Any:
    def handle(body: dict[str, Any]) -> tuple[int, Any]:
        seen.append(body)
        method, path = body["method"], body["path"]
        if (method, path) == ("GET", "/nodes"):
            return 200, {"status": 200, "body": NODES}
        if (method, path) == ("GET", "/users"):
            return 200, {"status": 200, "body": USERS}
        if (method, path) == ("GET", "/auth-keys"):
            return 200, {"status": 200, "body": []}
        if (method, path) == ("POST", "/auth-keys"):
            return 200, {
                "status": 201,
                "body": {
                    "key": "pcloud-authkey-SECRET",
                    "prefix": "pk1",
                    "expires_at": "2026-11-26T15:00:00Z",
                },
            }
        if (method, path) == ("POST", "/users") and body["body"]["username"] == "alice":
            return 200, {
                "status": 409,
                "body": {"error": {"code": "user_exists", "message": "user alice already exists"}},
            }
        return 200, {"status": 204, "body": None}

    return handle


def test_main_window_follows_events(
    loop: asyncio.AbstractEventLoop, backend: FakeBackend, session: Session
) -> None:
    window = MainWindow(session)
    window.show()
    session.start()

    async def scenario() -> None:
        await until(lambda: window.model.rowCount() == 1, what="peers")
        assert window.state_text.text() == "Connected"
        assert window.device.text() == "This device: laptop - 10.0.0.3"
        # HOST:PORT in the status bar (never a cut-off join link); the whole link as tooltip.
        assert window.status_server.text() == "Server: https://127.0.0.1:39229"
        assert window.status_server.toolTip().startswith("https://127.0.0.1:39229/#fp=sha256:")
        assert window.toggle.text() == "Disconnect"
        backend.push_status(fixture_json("status_running_peers.json"))
        await until(lambda: window.model.rowCount() == 4, what="more peers")
        window.filter.setText("pi-")
        assert window.proxy.rowCount() == 1
        assert window.proxy.index(0, HOSTNAME).data() == "pi-kitchen"
        window.copy_ip.click()
        assert QGuiApplication.clipboard().text() == "10.0.0.3"
        assert window.tabs.count() == 1  # no admin tab for a non-admin

        await backend.stop()  # the backend goes away: the window says what to do
        await until(lambda: not window.notice.isHidden(), what="notice")
        assert window.notice.title.text() == "The PCloud backend is not running"
        assert window.notice.command.text() == "sudo systemctl start pcloud-backend"
        assert not window.toggle.isEnabled()

    run(loop, scenario())


def test_admin_page(
    loop: asyncio.AbstractEventLoop, backend: FakeBackend, session: Session
) -> None:
    seen: list[dict[str, Any]] = []
    backend.route("POST", "/v1/coord", coord_router(seen))
    window = MainWindow(session)
    window.show()
    session.start()

    async def scenario() -> None:
        await until(lambda: session.status is not None, what="status")
        await session.remember_token("tok-admin")
        assert session.is_admin and window.tabs.count() == 2
        page = window.admin_page
        await until(
            lambda: page.devices.rowCount() == 2 and page.users.rowCount() == 1,
            what="devices and users listed",
        )
        assert page.users.item(0, 0).text() == "alice"
        assert all(b.get("token") == "tok-admin" for b in seen)
        assert not window.add_server.isHidden()  # admin on a client device

        page.devices.selectRow(1)
        assert page.new_name.text() == "laptop"
        page.new_name.setText("work-laptop")
        page._rename()
        await until(lambda: any(b["method"] == "PATCH" for b in seen), what="rename")
        assert next(b for b in seen if b["method"] == "PATCH") == {
            "method": "PATCH",
            "path": "/nodes/2",
            "token": "tok-admin",
            "body": {"hostname": "work-laptop"},
        }

        page.user_name.setText("alice")
        page.user_password.setText("pw")
        page._create_user()
        await until(lambda: "failed" in page.message.text(), what="named refusal")
        assert "already exists" in page.message.text()

        page.key_reusable.setChecked(True)
        page.key_role.setCurrentText("server")
        page._create_key()
        await until(lambda: not page.new_key.isHidden(), what="new key card")
        assert page.new_key.value.text() == "pcloud-authkey-SECRET"
        assert page.new_key.qr.text == "pcloud-authkey-SECRET"
        create = next(b for b in seen if (b["method"], b["path"]) == ("POST", "/auth-keys"))
        assert create["body"] == {
            "reusable": True,
            "ephemeral": False,
            "expires_in_s": 86400,
            "role": "server",
            "tags": [],
        }

    run(loop, scenario())


def test_add_server_dialog(
    loop: asyncio.AbstractEventLoop, backend: FakeBackend, session: Session
) -> None:
    def state(steps: list[str], st: str = "running") -> dict[str, Any]:
        names = ["approve", "k3s join token", "k3s server", "role server"]
        data = {
            "id": "j2",
            "kind": "join-server",
            "state": st,
            "error": None,
            "result": None,
            "steps": [
                {"name": n, "state": s, "detail": None} for n, s in zip(names, steps, strict=True)
            ],
        }
        return Job.model_validate(data).model_dump(mode="json")

    backend.route("POST", "/v1/join-server", (200, {"job_id": "j2"}))
    backend.route("GET", "/v1/jobs/j2", (200, state(["running", "pending", "pending", "pending"])))
    session.tokens.save("https://127.0.0.1:39229", "tok-admin")  # filed by an earlier sign-in
    session.start()
    dialog = AddServerDialog(session)
    dialog.show()
    assert dialog.pages.currentIndex() == 0  # the confirmation first

    async def scenario() -> None:
        await until(lambda: backend.subscribers == 1, what="event stream")
        await until(lambda: session.token == "tok-admin", what="token from the store")
        dialog.start_button.click()
        await until(lambda: dialog.job is not None, what="job")
        assert backend.calls("POST", "/v1/join-server") == [{"token": "tok-admin"}]
        backend.push_job(state(["done", "done", "done", "done"], "done"))
        await until(lambda: dialog.progress.headline.text() == "Done", what="done")

    run(loop, scenario())
