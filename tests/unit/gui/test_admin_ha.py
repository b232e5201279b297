"""The admin page's "Enable high availability" offer: shown only when it applies, then a
confirmation and the ha-enable job's progress, driven through the fake local API."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pcloud.backend.localapi.schemas import Job
from pcloud.gui.session import Session
from pcloud.gui.views.admin_page import AdminPage
from tests.unit.gui.conftest import fixture_json, run, until
from tests.unit.gui.fake_backend import FakeBackend

STEPS = ["servers online", "etcd member", "state moved to etcd", "other servers"]


def node(node_id: int, hostname: str, role: str) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "hostname": hostname,
        "user": "tagged-devices",
        "role": role,
        "tags": [],
        "address": f"10.0.0.{node_id}",
        "online": True,
    }


THREE_SERVERS = [
    node(1, "rpi111", "server"),
    node(2, "rpi112", "server"),
    node(3, "rpi113", "server"),
    node(4, "laptop", "client"),
]


class Coord:
    """The coordination answers relayed by `POST /v1/coord`, changeable mid-test."""

    def __init__(self, nodes: list[dict[str, Any]], store: str = "sqlite") -> None:
        self.nodes, self.store = nodes, store
        self.seen: list[tuple[str, str]] = []

    def __call__(self, body: dict[str, Any] | None) -> tuple[int, Any]:
        assert body is not None
        method, path = body["method"], body["path"]
        self.seen.append((method, path))
        answers = {
            ("GET", "/nodes"): self.nodes,
            ("GET", "/users"): [{"username": "admin", "admin": True, "created_at": ""}],
            ("GET", "/auth-keys"): [],
            ("GET", "/health"): {"version": "1", "needs_setup": False, "store": self.store},
        }
        if (method, path) in answers:
            return 200, {"status": 200, "body": answers[(method, path)]}
        return 200, {"status": 404, "body": {"error": {"code": "not_found", "message": path}}}


def job(states: list[str], state: str = "running") -> dict[str, Any]:
    data = {
        "id": "h1",
        "kind": "ha-enable",
        "state": state,
        "error": None,
        "result": None,
        "steps": [
            {"name": n, "state": s, "detail": None} for n, s in zip(STEPS, states, strict=True)
        ],
    }
    return Job.model_validate(data).model_dump(mode="json")


def on_server(backend: FakeBackend) -> None:
    status = fixture_json("status_running.json")
    status["self"] = dict(status["self"], hostname="rpi111", role="server")
    backend.status = status


async def signed_in(session: Session, page: AdminPage, coord: Coord) -> None:
    await until(lambda: session.status is not None, what="status")
    await session.remember_token("tok-admin")
    page.refresh()
    await until(lambda: ("GET", "/auth-keys") in coord.seen, what="the lists loaded")
    await asyncio.sleep(0.1)  # the store check comes after the lists


def test_offer_enable_follow_the_job_then_gone(
    loop: asyncio.AbstractEventLoop, backend: FakeBackend, session: Session
) -> None:
    on_server(backend)
    coord = Coord(THREE_SERVERS)
    backend.route("POST", "/v1/coord", coord)
    backend.route("POST", "/v1/ha-enable", (200, {"job_id": "h1"}))
    backend.route("GET", "/v1/jobs/h1", (200, job(["running", "pending", "pending", "pending"])))
    page = AdminPage(session)
    page.show()
    session.start()

    async def scenario() -> None:
        await signed_in(session, page, coord)
        await until(lambda: not page.ha_box.isHidden(), what="the HA offer")
        assert "3 servers (rpi111, rpi112, rpi113)" in page.ha_text.text()
        assert "SQLite" in page.ha_text.text()
        page.ha_button.click()
        dialog = page.ha_dialog
        assert dialog is not None and dialog.isVisible()
        assert dialog.pages.currentIndex() == 0  # the confirmation first: nothing started
        assert backend.calls("POST", "/v1/ha-enable") == []
        dialog.start_button.click()
        await until(lambda: dialog.job is not None, what="the job")
        assert backend.calls("POST", "/v1/ha-enable") == [{}]
        assert dialog.pages.currentIndex() == 1
        assert dialog.progress.headline.text() == "Working… (0 of 4 steps done)"
        # Another job's events are not this dialog's.
        other = dict(job(["done"] * 4, "done"), id="x9", kind="join-server")
        backend.push_job(other)
        backend.push_job(job(["done", "running", "pending", "pending"]))
        await until(
            lambda: dialog.progress.step_states()[1] == ("etcd member", "running"),
            what="progress from events",
        )
        assert dialog.job is not None and dialog.job.id == "h1"
        coord.store = "etcd"  # the switch happened
        backend.push_job(job(["done"] * 4, "done"))
        await until(lambda: dialog.progress.headline.text() == "Done", what="done")
        await until(lambda: page.ha_box.isHidden(), what="the offer gone once on etcd")

    run(loop, scenario())


def test_retry_resumes_the_failed_job(
    loop: asyncio.AbstractEventLoop, backend: FakeBackend, session: Session
) -> None:
    on_server(backend)
    coord = Coord(THREE_SERVERS)
    backend.route("POST", "/v1/coord", coord)
    backend.route("POST", "/v1/ha-enable", (200, {"job_id": "h1"}))
    backend.route("GET", "/v1/jobs/h1", (200, job(["running", "pending", "pending", "pending"])))
    page = AdminPage(session)
    session.start()

    async def scenario() -> None:
        await signed_in(session, page, coord)
        await until(lambda: not page.ha_box.isHidden(), what="the HA offer")
        page.ha_button.click()
        dialog = page.ha_dialog
        assert dialog is not None
        dialog.start_button.click()
        await until(lambda: dialog.job is not None, what="the job")
        failed = job(["failed", "pending", "pending", "pending"], "failed")
        failed["steps"][0]["detail"] = "2 servers online: rpi113 is offline"
        backend.push_job(failed)
        await until(lambda: not dialog.progress.retry.isHidden(), what="Retry")
        assert "rpi113 is offline" in dialog.progress.error.text()
        dialog.progress.retry.click()
        await until(lambda: len(backend.calls("POST", "/v1/ha-enable")) == 2, what="resumed")

    run(loop, scenario())


@pytest.mark.parametrize(
    ("nodes", "store", "role", "asks_health"),
    [
        (THREE_SERVERS[:2] + [THREE_SERVERS[3]], "sqlite", "server", False),  # two servers
        (THREE_SERVERS, "etcd", "server", True),  # already HA
        (THREE_SERVERS, "sqlite", "client", False),  # this device is no server
    ],
    ids=["two-servers", "already-etcd", "on-a-client"],
)
def test_no_offer_when_it_does_not_apply(
    loop: asyncio.AbstractEventLoop,
    backend: FakeBackend,
    session: Session,
    nodes: list[dict[str, Any]],
    store: str,
    role: str,
    asks_health: bool,
) -> None:
    on_server(backend)
    backend.status["self"]["role"] = role
    coord = Coord(nodes, store)
    backend.route("POST", "/v1/coord", coord)
    page = AdminPage(session)
    session.start()

    async def scenario() -> None:
        await signed_in(session, page, coord)
        assert page.devices.rowCount() == len(nodes)
        assert page.ha_box.isHidden()
        assert (("GET", "/health") in coord.seen) is asks_health

    run(loop, scenario())


def test_no_offer_for_a_non_admin(
    loop: asyncio.AbstractEventLoop, backend: FakeBackend, session: Session
) -> None:
    on_server(backend)
    coord = Coord(THREE_SERVERS)

    def refuse_users(body: dict[str, Any] | None) -> tuple[int, Any]:
        assert body is not None
        if body["path"] in ("/users", "/auth-keys"):
            return 200, {
                "status": 403,
                "body": {"error": {"code": "forbidden", "message": "admins only"}},
            }
        return coord(body)

    backend.route("POST", "/v1/coord", refuse_users)
    page = AdminPage(session)
    session.start()

    async def scenario() -> None:
        await until(lambda: session.status is not None, what="status")
        session.token = "tok-user"
        page.refresh()
        await until(lambda: "failed" in page.message.text(), what="the refusal")
        assert page.ha_box.isHidden() and ("GET", "/health") not in coord.seen

    run(loop, scenario())
