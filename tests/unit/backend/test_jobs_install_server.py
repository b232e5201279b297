"""install-server's pieces without a lab: the coordination server kept running (child adopted
after a backend restart and restarted when it dies, or a systemd unit), secrets kept out of the
job file and away from read-only callers, and the coordination passthrough's allow-list."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import httpx
import pytest

from pcloud.backend.config import BackendSettings
from pcloud.backend.control.relay import allowed
from pcloud.backend.jobs import install_server
from pcloud.backend.local import LocalBackend
from pcloud.backend.localapi.client import BackendError, LocalClient
from pcloud.backend.localapi.routes import _redacted, create_app
from pcloud.backend.localapi.server import bind_socket, make_server
from pcloud.backend.proc import wait_pid_exit
from pcloud.backend.server_supervisor import Services
from pcloud.backend.services.runner import Result
from pcloud.backend.wg.fake import FakeDriver
from tests.support.ports import free_port


async def health(url: str, ca: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    async with httpx.AsyncClient(verify=ctx, timeout=5) as c:
        return (await c.get(f"{url}/api/v1/health")).status_code


async def test_server_child_is_adopted_after_restart_and_restarted_when_killed(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    services = Services(tmp_path, manager="child")
    ca = services.server_dir / "tls" / "ca.pem"
    pids: list[int] = []
    try:
        await services.start_server(f"127.0.0.1:{port}", "10.0.0.0/24", "test")
        await services.wait_healthy(url, ca)
        first = services.child.pid
        assert first is not None
        pids.append(first)
        code = (services.server_dir / "setup-code").read_text().strip()
        # The setup code is printed on the server's stdout: it must not land in our log.
        assert code not in (tmp_path / "pcloud-server.log").read_text()
        # A backend restart: a new Services resumes from services.json and adopts the process.
        services.child._stopping = True  # the old backend's supervisor is gone  # noqa: SLF001
        again = Services(tmp_path, manager="child")
        await again.resume()
        assert again.child.pid == first
        # It dies: the supervisor starts a new one, which answers with the same CA.
        ca_before = ca.read_bytes()
        os.kill(first, signal.SIGKILL)
        assert await wait_pid_exit(first, 10)
        for _ in range(100):
            if again.child.pid not in (None, first):
                break
            await asyncio.sleep(0.1)
        assert again.child.pid not in (None, first)
        pids.append(again.child.pid)
        await again.wait_healthy(url, ca)
        assert await health(url, ca) == 200 and ca.read_bytes() == ca_before
    finally:
        for svc in (services, locals().get("again")):
            if isinstance(svc, Services):
                await svc.child.stop()
        for pid in pids:
            await wait_pid_exit(pid, 5)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def run(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 60.0
    ) -> Result:
        self.calls.append(list(argv))
        return Result(list(argv), 0, "", "")

    def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, log_path: str
    ) -> int:
        raise AssertionError("a systemd install starts nothing itself")


async def test_systemd_unit_written_under_root_enabled_once(tmp_path: Path) -> None:
    runner = Recorder()
    services = Services(
        tmp_path / "state", system_root=tmp_path / "root", manager="systemd", runner=runner
    )
    await services.start_server("192.168.0.111:8443", "10.0.0.0/24", "rpi111")
    unit = tmp_path / "root/etc/systemd/system/pcloud-server.service"
    text = unit.read_text()
    assert "--listen 192.168.0.111:8443" in text and "--network 10.0.0.0/24" in text
    assert "StandardOutput=null" in text and "WantedBy=multi-user.target" in text
    assert runner.calls == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "pcloud-server"],
        ["systemctl", "restart", "pcloud-server"],
    ]
    runner.calls.clear()
    await services.start_server("192.168.0.111:8443", "10.0.0.0/24", "rpi111")
    assert runner.calls == [["systemctl", "enable", "--now", "pcloud-server"]]


def test_auto_manager_is_child_for_a_lab_root(tmp_path: Path) -> None:
    assert Services(tmp_path, system_root=tmp_path / "root").manager == "child"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[LocalBackend, Path]]:
    settings = BackendSettings(
        state_dir=tmp_path / "state",
        socket=tmp_path / "b.sock",
        driver="fake",
        system_root=tmp_path / "root",
    )
    backend = LocalBackend(settings, FakeDriver())
    await backend.start()
    sock = bind_socket(settings.socket, mode=0o600, group="pcloud")
    server = make_server(create_app(backend, backend_uid=os.geteuid()))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield backend, settings.socket
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        await backend.shutdown()
        sock.close()


async def test_admin_password_never_in_the_job_file(served: tuple[LocalBackend, Path]) -> None:
    backend, path = served
    backend.store.key_path.unlink()  # the first step fails at once: nothing else runs
    async with LocalClient(path) as client:
        job_id = await client.install_server(
            listen="127.0.0.1:1", admin_username="admin", admin_password="hunter2-hunter2"
        )
        job = await backend.jobs.wait(job_id)
    assert job["state"] == "failed" and job["error"].startswith("key pair:")
    text = (backend.settings.state_dir / "jobs" / f"{job_id}.json").read_text()
    assert "hunter2" not in text and json.loads(text)["params"]["listen"] == "127.0.0.1:1"
    assert install_server._credentials[job_id] == ("admin", "hunter2-hunter2")  # noqa: SLF001
    install_server._credentials.pop(job_id)  # noqa: SLF001


def test_setup_code_hidden_from_read_only_callers() -> None:
    job = {
        "id": "j",
        "kind": "install-server",
        "state": "done",
        "steps": [],
        "error": None,
        "result": {"setup_code": "abcd-efgh", "join_link": "https://x/#fp=sha256:00"},
    }
    shown = _redacted(job)
    assert shown["result"] == {"join_link": "https://x/#fp=sha256:00"}
    assert job["result"]["setup_code"] == "abcd-efgh"  # the original is untouched


async def test_coord_passthrough_refuses_unlisted_routes_and_needs_login(
    served: tuple[LocalBackend, Path],
) -> None:
    _, path = served
    async with LocalClient(path) as client:
        with pytest.raises(BackendError) as refused:
            await client.coord("GET", "/cluster/k3s")
        assert refused.value.code == "path_not_allowed" and refused.value.status == 400
        with pytest.raises(BackendError) as nobody:
            await client.coord("GET", "/health")
        assert nobody.value.code == "not_logged_in" and nobody.value.status == 409


@pytest.mark.parametrize(
    ("method", "path", "ok"),
    [
        ("GET", "/health", True),
        ("POST", "/setup", True),
        ("DELETE", "/users/alice", True),
        ("DELETE", "/auth-keys/0a1b2c3d4e5f", True),
        ("PATCH", "/nodes/12", True),
        ("GET", "/cluster/k3s", False),
        ("GET", "/nodes/../cluster/k3s", False),
        ("PATCH", "/nodes/12/../../acl", False),
        ("PUT", "/acl", False),
        ("POST", "/nodes/register", False),
    ],
)
def test_allow_list(method: str, path: str, ok: bool) -> None:
    assert allowed(method, path) is ok
