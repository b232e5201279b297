"""The local API served in-process on its own socket: SSE status changes and job events, the
jobs hook, and the peer credentials seen by the app (this process: root or not)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pcloud.backend.config import BackendSettings
from pcloud.backend.events import Event
from pcloud.backend.local import LocalBackend
from pcloud.backend.localapi.client import BackendError, LocalClient
from pcloud.backend.localapi.routes import create_app
from pcloud.backend.localapi.schemas import Job, JobEvent, JobStep, StatusEvent
from pcloud.backend.localapi.server import bind_socket, make_server
from pcloud.backend.wg.fake import FakeDriver

JOB = Job(
    id="j1",
    kind="install-server",
    state="running",
    steps=[JobStep(name="keys", state="done"), JobStep(name="server", state="running")],
)


class Jobs:
    def get(self, job_id: str) -> Job | None:
        return JOB if job_id == JOB.id else None


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[LocalBackend, Path]]:
    settings = BackendSettings(
        state_dir=tmp_path / "state", socket=tmp_path / "b.sock", driver="fake"
    )
    backend = LocalBackend(settings, FakeDriver())
    await backend.start()
    sock = bind_socket(settings.socket, mode=0o600, group="pcloud")
    server = make_server(create_app(backend, jobs=Jobs(), backend_uid=os.geteuid()))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield backend, settings.socket
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        await backend.shutdown()
        sock.close()


async def test_events_stream_status_changes_and_jobs(
    served: tuple[LocalBackend, Path],
) -> None:
    backend, path = served
    async with LocalClient(path) as client:
        events = client.events()
        first = await asyncio.wait_for(anext(events), 10)
        assert isinstance(first, StatusEvent) and first.status.state == "NeedsLogin"

        backend.bus.publish(Event("job", JOB.model_dump(mode="json")))
        job = await asyncio.wait_for(anext(events), 10)
        assert isinstance(job, JobEvent) and job.job == JOB

        backend.set_fatal("wireguard-go is missing")
        changed = await asyncio.wait_for(anext(events), 10)
        assert isinstance(changed, StatusEvent)
        assert changed.status.state == "Error" and changed.status.error == "wireguard-go is missing"
        await events.aclose()

        assert await client.job("j1") == JOB
        with pytest.raises(BackendError, match="no job") as info:
            await client.job("nope")
        assert info.value.status == 404


async def test_own_uid_may_write_in_process(served: tuple[LocalBackend, Path]) -> None:
    _, path = served
    async with LocalClient(path) as client:
        # Not a 403: the caller is this process (SO_PEERCRED), the backend's own uid.
        with pytest.raises(BackendError, match="not logged in"):
            await client.up()
