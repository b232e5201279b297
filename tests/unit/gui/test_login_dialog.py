"""The login dialog names each failure inline, using the backend's recorded error answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pcloud.backend.localapi.client import LocalClient
from pcloud.gui.dialogs.login import LoginDialog
from pcloud.gui.secrets import TokenStore
from pcloud.gui.session import Session
from tests.unit.gui.conftest import fixture_json, run, until
from tests.unit.gui.fake_backend import FakeBackend, error

LINK = "https://192.168.1.10:8443/#fp=sha256:" + "ab" * 32
ERRORS = fixture_json("login_errors.json")


def fill(dialog: LoginDialog, *, key: str | None = None) -> None:
    dialog.link.setText(LINK)
    if key:
        dialog.by_key.setChecked(True)
        dialog.auth_key.setText(key)
    else:
        dialog.username.setText("alice")
        dialog.password.setText("hunter22")


def submit_and_wait(loop: asyncio.AbstractEventLoop, dialog: LoginDialog) -> None:
    dialog.submit()
    assert dialog.task is not None
    run(loop, asyncio.shield(dialog.task))


@pytest.mark.parametrize(
    ("recorded", "title", "by_key"),
    [
        ("wrong_fingerprint", "Wrong fingerprint", False),
        ("wrong_password", "Wrong username or password", False),
        ("server_unreachable", "Server unreachable", False),
        ("bad_key", "Pre-auth key refused", True),
        ("invalid_link", "Not a join link", False),
    ],
)
def test_named_errors(
    loop: asyncio.AbstractEventLoop,
    backend: FakeBackend,
    session: Session,
    recorded: str,
    title: str,
    by_key: bool,
) -> None:
    answer = ERRORS[recorded]
    backend.route("POST", "/v1/login", (answer["status"], answer["body"]))
    dialog = LoginDialog(session)
    dialog.show()
    fill(dialog, key="pcloud-key" if by_key else None)
    submit_and_wait(loop, dialog)
    assert dialog.problem is not None and dialog.problem.kind == recorded
    assert dialog.error_title.text() == title and dialog.error_title.isVisibleTo(dialog)
    assert dialog.isVisible()  # stays open to fix the mistake


def test_unreachable_from_a_5xx_code(
    loop: asyncio.AbstractEventLoop, backend: FakeBackend, session: Session
) -> None:
    backend.route("POST", "/v1/login", error(502, "server_unreachable", "https://x: timed out"))
    dialog = LoginDialog(session)
    fill(dialog)
    submit_and_wait(loop, dialog)
    assert dialog.error_title.text() == "Server unreachable"


def test_backend_not_running(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    session = Session(LocalClient(tmp_path / "nobody.sock"), TokenStore(use_system=False))
    dialog = LoginDialog(session)
    fill(dialog)
    submit_and_wait(loop, dialog)
    assert dialog.error_title.text() == "The PCloud backend is not running"
    assert "sudo systemctl start pcloud-backend" in dialog.error_detail.text()
    run(loop, session.close())


def test_not_in_group(
    loop: asyncio.AbstractEventLoop, backend: FakeBackend, session: Session
) -> None:
    backend.route(
        "POST",
        "/v1/login",
        error(403, "forbidden", "permission denied: uid 1000 is not in group pcloud"),
    )
    dialog = LoginDialog(session)
    fill(dialog)
    submit_and_wait(loop, dialog)
    assert dialog.problem is not None and dialog.problem.kind == "permission"
    assert "sudo usermod -aG pcloud $USER" in dialog.error_detail.text()


def test_success_signs_in_and_keeps_no_password(
    loop: asyncio.AbstractEventLoop, backend: FakeBackend, session: Session
) -> None:
    backend.route("POST", "/v1/login", lambda body: (200, fixture_json("status_running.json")))
    backend.route(
        "POST",
        "/v1/coord",
        lambda body: (
            (200, {"status": 200, "body": {"token": "tok-1", "expires_at": "2026-12-01T00:00:00Z"}})
            if body["path"] == "/login"
            else (200, {"status": 200, "body": []})
        ),
    )
    done: list[bool] = []
    dialog = LoginDialog(session)
    dialog.logged_in.connect(lambda: done.append(True))
    dialog.show()
    fill(dialog)
    submit_and_wait(loop, dialog)
    assert done == [True] and not dialog.isVisible()
    assert backend.calls("POST", "/v1/login") == [
        {"server_url": LINK, "username": "alice", "password": "hunter22"}
    ]
    sign_in = [b for b in backend.calls("POST", "/v1/coord") if b["path"] == "/login"]
    assert sign_in == [
        {"method": "POST", "path": "/login", "body": {"username": "alice", "password": "hunter22"}}
    ]
    run(loop, until(lambda: session.is_admin, what="admin check"))
    assert session.token == "tok-1"
    assert session.tokens.load("https://127.0.0.1:39229") == "tok-1"
    assert dialog.password.text() == ""


def test_empty_form_is_refused_locally(backend: FakeBackend, session: Session) -> None:
    dialog = LoginDialog(session)
    dialog.submit()
    assert dialog.problem is not None and dialog.problem.title == "No join link"
    assert backend.requests == []
