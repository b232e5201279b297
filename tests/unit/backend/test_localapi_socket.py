"""The local API over its real sockets, served by a real `pcloud-backend` process (fake
WireGuard driver): socket modes and group, the socket settings, browser refusal, SSE. Who may
write through which socket (other uids, the group) is in
tests/integration/test_backend_localapi_tiers.py."""

from __future__ import annotations

import asyncio
import grp
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

from pcloud.backend.config import ConfigError, load_settings
from pcloud.backend.localapi.client import (
    BackendError,
    BackendNotRunning,
    LocalClient,
    readonly_socket_path,
)

BIN = Path(sys.executable).parent

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
        argv = [
            str(BIN / "pcloud-backend"),
            "--config",
            str(config),
            "--state-dir",
            str(self.dir / "state"),
            "--socket",
            str(self.socket),
            "--driver",
            "fake",
            "--hostname",
            "test-device",
            *extra,
        ]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        # A loaded machine once took over 20 s: the deadline only bounds a hang.
        deadline = time.monotonic() + 60
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                why = self.log.read_text()
                self.stop()  # never leave the process behind (one ran on for 20 minutes)
                raise RuntimeError(f"backend did not start: {why}")
            time.sleep(0.05)  # polling for the socket file, bounded by the deadline

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
def backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.stop()


def pcloud_gid() -> int:
    return grp.getgrnam("pcloud").gr_gid


@needs_root
def test_main_socket_is_0660_root_pcloud_and_ro_socket_0666(backend: Backend) -> None:
    st = backend.socket.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert (st.st_uid, st.st_gid) == (0, pcloud_gid())
    ro = Path(f"{backend.socket}.ro").stat()
    assert stat.S_ISSOCK(ro.st_mode) and stat.S_IMODE(ro.st_mode) == 0o666


def test_both_sockets_are_removed_at_exit() -> None:
    b = Backend()
    try:
        ro = readonly_socket_path(b.socket)
        assert ro.exists()
        os.kill(b.proc.pid, signal.SIGTERM)
        assert b.proc.wait(10) == 0
        assert not b.socket.exists() and not ro.exists()
    finally:
        b.stop()


def test_socket_settings() -> None:
    assert load_settings(["--config", "/dev/null"]).readonly_socket is True
    assert load_settings(["--config", "/dev/null", "--no-readonly-socket"]).readonly_socket is False
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write("readonly_socket = false\n")
        f.flush()
        assert load_settings(["--config", f.name]).readonly_socket is False
    # The mode is fixed now (0660 + the .ro socket); an old config naming it is told so.
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write('socket_mode = "0666"\n')
        f.flush()
        with pytest.raises(ConfigError, match="unknown setting 'socket_mode'"):
            load_settings(["--config", f.name])


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
        assert not client.read_only  # this process may open the main socket

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
