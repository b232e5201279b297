"""The first-run wizard's install path: steps ticked from job events, Retry resumes, setup code,
first admin, join link with QR."""

from __future__ import annotations

import asyncio
from typing import Any

from pcloud.backend.localapi.schemas import Job
from pcloud.gui.dialogs.wizard import (
    ACCOUNT,
    DONE,
    NETWORK,
    PROGRESS,
    FirstRunWizard,
    check_network,
)
from pcloud.gui.session import Session
from pcloud.gui.widgets.job_progress import JobProgressView, failure_text
from tests.unit.gui.conftest import fixture_json, run, until
from tests.unit.gui.fake_backend import FakeBackend

STEPS = ["key pair", "coordination server", "register this device", "k3s server", "first account"]
JOIN_LINK = "https://192.168.1.10:8443/#fp=sha256:" + "cd" * 32


def job(
    states: list[str],
    *,
    state: str = "running",
    error: str | None = None,
    detail: dict[int, str] | None = None,
    result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data = {
        "id": "job-1",
        "kind": "install-server",
        "state": state,
        "error": error,
        "result": result,
        "steps": [
            {"name": n, "state": s, "detail": (detail or {}).get(i)}
            for i, (n, s) in enumerate(zip(STEPS, states, strict=True))
        ],
    }
    Job.model_validate(data)  # the fixture is exactly the schema's shape
    return data


def test_progress_view_renders_steps_and_names_the_failure() -> None:
    view = JobProgressView()
    view.set_job(Job.model_validate(job(["done", "running", "pending", "pending", "pending"])))
    assert view.step_states()[:2] == [("key pair", "done"), ("coordination server", "running")]
    assert view.headline.text() == "Working… (1 of 5 steps done)"
    assert view.retry.isHidden()
    failed = Job.model_validate(
        job(
            ["done", "done", "done", "failed", "pending"],
            state="failed",
            error="k3s failed",
            detail={3: "port 6443 is in use"},
        )
    )
    view.set_job(failed)
    assert failure_text(failed) == "Step “k3s server” failed: port 6443 is in use"
    assert view.error.text() == failure_text(failed)
    assert not view.retry.isHidden()


def test_network_check() -> None:
    assert check_network("10.0.0.0/24") is None
    assert check_network("100.64.0.0/10") is None
    assert "CIDR" in (check_network("10.0.0.1/24") or "")  # host bits set
    assert check_network("10.0.0.0/31") is not None
    assert check_network("fd00::/64") is not None


def test_install_path(
    loop: asyncio.AbstractEventLoop, backend: FakeBackend, session: Session
) -> None:
    backend.status = fixture_json("status_needs_login.json")
    backend.route("POST", "/v1/install-server", (200, {"job_id": "job-1"}))
    backend.route("GET", "/v1/jobs/job-1", (200, job(["running"] + ["pending"] * 4)))
    backend.route(
        "POST",
        "/v1/coord",
        lambda body: (
            200,
            {
                "status": 200,
                "body": {
                    "username": body["body"]["username"],
                    "token": "tok-admin",
                    "expires_at": "2026-12-01T00:00:00Z",
                },
            }
            if body["path"] == "/setup"
            else {"status": 200, "body": []},
        ),
    )
    session.start()
    wizard = FirstRunWizard(session)
    wizard.show()

    async def scenario() -> None:
        await until(lambda: session.status is not None, what="status")
        wizard.choose_page.install.setChecked(True)
        wizard.next()
        assert wizard.currentId() == NETWORK
        wizard.network_page.network.setText("10.0.0.0/16")
        wizard.network_page.address.setEditText("192.168.1.10")
        wizard.next()
        assert wizard.currentId() == PROGRESS
        page = wizard.progress_page
        await until(lambda: page.job is not None, what="job started")
        assert backend.calls("POST", "/v1/install-server") == [
            {"network": "10.0.0.0/16", "listen": "192.168.1.10:8443"}
        ]
        assert not page.isComplete()

        # Each event ticks a step.
        backend.push_job(job(["done", "running", "pending", "pending", "pending"]))
        await until(lambda: page.view.step_states()[0] == ("key pair", "done"), what="tick 1")
        backend.push_job(
            job(
                ["done", "done", "done", "failed", "pending"],
                state="failed",
                error="k3s failed",
                detail={3: "port 6443 is in use"},
            )
        )
        await until(lambda: not page.view.retry.isHidden(), what="retry offered")
        assert "k3s server" in page.view.error.text() and "6443" in page.view.error.text()
        assert not page.isComplete()

        # Retry resumes: the same request again; the backend skips finished steps.
        page.view.retry.click()
        await until(lambda: len(backend.calls("POST", "/v1/install-server")) == 2, what="retry")
        backend.push_job(
            job(
                ["done", "done", "done", "done", "done"],
                state="done",
                result={"setup_code": "ABCD-EFGH", "join_link": JOIN_LINK},
            )
        )
        await until(page.isComplete, what="job done")
        wizard.next()
        assert wizard.currentId() == ACCOUNT
        account = wizard.account_page
        assert account.setup_code.text() == "ABCD-EFGH"
        account.username.setText("admin")
        account.password.setText("long enough pw")
        account.confirm.setText("different pw!!")
        wizard.next()
        assert account.error.text() == "The two passwords differ"
        account.confirm.setText("long enough pw")
        wizard.next()
        await until(lambda: wizard.currentId() == DONE, what="account created")
        setup = [b for b in backend.calls("POST", "/v1/coord") if b["path"] == "/setup"]
        assert setup == [
            {
                "method": "POST",
                "path": "/setup",
                "body": {
                    "setup_code": "ABCD-EFGH",
                    "username": "admin",
                    "password": "long enough pw",
                },
            }
        ]
        assert session.token == "tok-admin"
        assert wizard.done_page.link.text() == JOIN_LINK
        assert wizard.done_page.qr.text == JOIN_LINK

    run(loop, scenario())


def test_join_path_opens_login(loop: asyncio.AbstractEventLoop, session: Session) -> None:
    wizard = FirstRunWizard(session)
    asked: list[bool] = []
    wizard.join_requested.connect(lambda: asked.append(True))
    wizard.show()
    assert wizard.choose_page.isFinalPage()
    wizard.accept()
    assert asked == [True]
