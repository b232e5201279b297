"""The local API over its real socket, served by a real `pcloud-backend` process (fake
WireGuard driver): socket mode and group, SO_PEERCRED write rules, browser refusal, SSE."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcloud.backend.localapi.client import BackendError, BackendNotRunning, LocalClient

BIN = Path(sys.executable).parent
NOBODY = ["--reuid=65534", "--regid=65534"]

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to act as another uid",
)


class Backend:
    """A pcloud-backend subprocess in its own world-traversable temp dir."""

    def __init__(self, *extra: str) -> None:
        # Not pytest's tmp_path: it is 0700, and the other-uid callers must reach the socket.
        self.dir = Path(tempfile.mkdtemp(prefix="pcloud-backend-test-"))
        os.chmod(self.dir, 0o755)
        self.socket = self.dir / "backend.sock"
        config = self.dir / "backend.toml"
        config.write_text("")
        self.log = self.dir / "backend.log"
        argv = [str(BIN / "pcloud-backend"), "--config", str(config), "--state-dir",
                str(self.dir / "state"), "--socket", str(self.socket), "--driver", "fake",
                "--hostname", "test-device", *extra]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"backend did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def open_backend() -> Iterator[Backend]:
    b = Backend("--socket-mode", "0666")
    yield b
    b.stop()


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.stop()


def call_as(user: list[str], sock: Path, method: str, path: str) -> tuple[int, dict[str, object]]:
    """One request over the socket from a process running with other credentials."""
    code = (
        "import httpx, json, sys\n"
        f"c = httpx.Client(transport=httpx.HTTPTransport(uds={str(sock)!r}))\n"
        f"r = c.request({method!r}, 'http://pcloud{path}')\n"
        "print(json.dumps([r.status_code, r.json()]))\n"
    )
    out = subprocess.run(["setpriv", *user, sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=30, check=True)
    status, body = json.loads(out.stdout)
    return status, body


def pcloud_gid() -> int:
    return grp.getgrnam("pcloud").gr_gid


@needs_root
def test_socket_is_0660_root_pcloud(backend: Backend) -> None:
    st = backend.socket.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert (st.st_uid, st.st_gid) == (0, pcloud_gid())


@needs_root
def test_unprivileged_caller_reads_but_cannot_write(open_backend: Backend) -> None:
    nobody = [*NOBODY, "--clear-groups"]
    status, body = call_as(nobody, open_backend.socket, "GET", "/v1/status")
    assert status == 200 and body["state"] == "NeedsLogin"
    status, body = call_as(nobody, open_backend.socket, "POST", "/v1/up")
    assert status == 403
    assert "pcloud group" in str(body["error"]) and "65534" in str(body["error"])


@needs_root
def test_pcloud_group_member_may_write(open_backend: Backend) -> None:
    member = [*NOBODY, f"--groups={pcloud_gid()}"]
    status, body = call_as(member, open_backend.socket, "POST", "/v1/up")
    # Past the permission check: refused only because nobody logged in yet.
    assert status == 409 and body["error"] == {
        "code": "not_logged_in", "message": "not logged in: run `pcloud login JOIN-LINK` first"}


@needs_root
def test_non_member_cannot_open_the_default_socket(backend: Backend) -> None:
    code = (
        "import asyncio\n"
        "from pcloud.backend.localapi.client import LocalClient, PermissionDenied\n"
        "async def main():\n"
        f"    async with LocalClient({str(backend.socket)!r}) as c:\n"
        "        try:\n"
        "            await c.status()\n"
        "        except PermissionDenied as e:\n"
        "            print('denied:', e)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(["setpriv", *NOBODY, "--clear-groups", sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.startswith("denied: no permission to open")


async def test_browser_requests_are_refused(backend: Backend) -> None:
    import httpx

    transport = httpx.AsyncHTTPTransport(uds=str(backend.socket))
    async with httpx.AsyncClient(transport=transport, base_url="http://pcloud") as c:
        for header in ({"Origin": "http://evil.example"}, {"Referer": "http://evil.example/"}):
            answer = await c.get("/v1/status", headers=header)
            assert answer.status_code == 403
            assert answer.json()["error"]["code"] == "browser_refused"
        answer = await c.post("/v1/login", json={"server_url": "x"})
        assert answer.status_code == 422 and "auth_key" in answer.json()["error"]["message"]
        assert (await c.get("/v1/jobs/nope")).status_code == 404


async def test_client_methods_and_events(backend: Backend) -> None:
    async with LocalClient(backend.socket) as client:
        status = await client.status()
        assert status.state == "NeedsLogin" and status.self is None
        events = client.events()
        first = await asyncio.wait_for(anext(events), 10)
        assert first.kind == "status" and first.status.state == "NeedsLogin"
        await events.aclose()


        with pytest.raises(BackendError, match="not logged in") as info:
            await client.down()
        assert info.value.code == "not_logged_in" and info.value.status == 409
        with pytest.raises(BackendError, match="fingerprint"):
            await client.login("https://127.0.0.1:1/", auth_key="k")


async def test_backend_not_running(tmp_path: Path) -> None:
    async with LocalClient(tmp_path / "none.sock") as client:
        with pytest.raises(BackendNotRunning, match="not running"):
            await client.status()
    stale = tmp_path / "stale.sock"
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()  # a socket file nobody listens on
    async with LocalClient(stale) as client:
        with pytest.raises(BackendNotRunning):
            await client.up()

