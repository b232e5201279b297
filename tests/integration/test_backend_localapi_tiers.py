"""The local API's two socket tiers, against a real `pcloud-backend` process (fake WireGuard
driver) and callers with other credentials (`setpriv`):

- the main socket (0660 root:pcloud) refuses a user outside the group at connect() (EACCES);
- `LocalClient` and the `pcloud` CLI then fall back to `<socket>.ro` (0666): reads work,
  every write answers 403 naming the fix (`sudo usermod -aG pcloud $USER`, log in again);
- a member of the group writes through either socket (the rule is SO_PEERCRED, not the path);
- with `--no-readonly-socket` a non-member is told it has no permission.
"""

from __future__ import annotations

import errno
import grp
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from pcloud.backend.config import BackendSettings
from pcloud.backend.local import LocalBackend
from pcloud.backend.localapi.client import readonly_socket_path
from pcloud.backend.localapi.routes import create_app
from pcloud.backend.wg.fake import FakeDriver

BIN = Path(sys.executable).parent
NOBODY = ["--reuid=65534", "--regid=65534", "--clear-groups"]
FIX = "sudo usermod -aG pcloud $USER"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to act as other users",
)


def member() -> list[str]:
    return ["--reuid=65534", "--regid=65534", f"--groups={grp.getgrnam('pcloud').gr_gid}"]


class Backend:
    """A pcloud-backend subprocess whose sockets other uids can reach."""

    def __init__(self, *extra: str) -> None:
        # Not pytest's tmp_path: it is 0700 and the other-uid callers must traverse it.
        self.dir = Path(tempfile.mkdtemp(prefix="pcloud-tiers-test-"))
        os.chmod(self.dir, 0o755)
        self.socket = self.dir / "backend.sock"
        self.ro = readonly_socket_path(self.socket)
        (self.dir / "backend.toml").write_text("")
        self.log = self.dir / "backend.log"
        argv = [
            str(BIN / "pcloud-backend"),
            "--config",
            str(self.dir / "backend.toml"),
            "--state-dir",
            str(self.dir / "state"),
            "--socket",
            str(self.socket),
            "--driver",
            "fake",
            "--hostname",
            "tiers",
            *extra,
        ]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        # Ready when it answers (polled with a deadline; the process gives no other signal).
        deadline = time.monotonic() + 20
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"backend did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket))) as c:
                return c.get("http://pcloud/v1/status").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.stop()


def as_user(user: list[str], code: str) -> Any:
    """Run Python `code` (which prints one JSON value) with other credentials; its value."""
    out = subprocess.run(
        ["setpriv", *user, sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def pcloud_as(user: list[str], sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", *user, str(BIN / "pcloud"), "--socket", str(sock), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def raw_requests(user: list[str], sock: Path, requests: list[tuple[str, str]]) -> list[Any]:
    """[status, body] of each request, sent over `sock` exactly (no fallback)."""
    code = (
        "import httpx, json\n"
        f"c = httpx.Client(transport=httpx.HTTPTransport(uds={str(sock)!r}))\n"
        "out = []\n"
        f"for method, path in {requests!r}:\n"
        "    r = c.request(method, 'http://pcloud' + path, json={})\n"
        "    out.append([r.status_code, r.json()])\n"
        "print(json.dumps(out))\n"
    )
    result: list[Any] = as_user(user, code)
    return result


def write_routes(tmp_path: Path) -> list[tuple[str, str]]:
    """Every (method, path) of the app that is not a read, found from the app itself so a
    route added later is covered without touching this test."""
    settings = BackendSettings(
        state_dir=tmp_path / "state", socket=tmp_path / "x.sock", driver="fake"
    )
    app = create_app(LocalBackend(settings, FakeDriver()))
    found = sorted(
        (method, route.path.replace("{job_id}", "j1"))
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods
        if method not in ("GET", "HEAD")
    )
    return found


def test_socket_modes(backend: Backend) -> None:
    main, ro = backend.socket.stat(), backend.ro.stat()
    assert (oct(main.st_mode & 0o777), main.st_uid, main.st_gid) == (
        "0o660",
        0,
        grp.getgrnam("pcloud").gr_gid,
    )
    assert oct(ro.st_mode & 0o777) == "0o666"


def test_non_member_cannot_connect_to_the_main_socket(backend: Backend) -> None:
    code = (
        "import errno, json, socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(backend.socket)!r}); print(json.dumps('connected'))\n"
        "except OSError as e:\n"
        "    print(json.dumps(errno.errorcode[e.errno]))\n"
    )
    assert as_user(NOBODY, code) == errno.errorcode[errno.EACCES]
    assert as_user(member(), code) == "connected"


def test_non_member_client_reads_through_the_fallback_and_is_refused_writes(
    backend: Backend,
) -> None:
    code = (
        "import asyncio, json\n"
        "from pcloud.backend.localapi.client import LocalClient, PermissionDenied\n"
        "async def main():\n"
        f"    async with LocalClient({str(backend.socket)!r}) as c:\n"
        "        status = await c.status()\n"
        "        events = c.events()\n"
        "        first = await asyncio.wait_for(anext(events), 10)\n"
        "        await events.aclose()\n"
        "        try:\n"
        "            await c.up()\n"
        "            denied = None\n"
        "        except PermissionDenied as e:\n"
        "            denied = e.message\n"
        "        return [status.state, first.kind, c.read_only, denied]\n"
        "print(json.dumps(asyncio.run(main())))\n"
    )
    state, event, read_only, denied = as_user(NOBODY, code)
    assert (state, event, read_only) == ("NeedsLogin", "status", True)
    assert denied is not None and denied.startswith("permission denied: uid 65534")
    assert FIX in denied and "log in again" in denied


def test_non_member_cli_status_works_and_up_is_refused(backend: Backend) -> None:
    status = pcloud_as(NOBODY, backend.socket, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "NeedsLogin"
    up = pcloud_as(NOBODY, backend.socket, "up")
    assert up.returncode == 1 and up.stdout == ""
    assert up.stderr.startswith("pcloud: permission denied") and FIX in up.stderr
    assert len(up.stderr.strip().splitlines()) == 1


def test_every_write_route_is_refused_on_the_ro_socket(backend: Backend, tmp_path: Path) -> None:
    writes = write_routes(tmp_path)
    assert {("POST", "/v1/up"), ("POST", "/v1/login"), ("POST", "/v1/rotate-key")} <= set(writes)
    # A write to a path nobody routes is refused too: the check goes by method.
    answers = raw_requests(
        NOBODY,
        backend.ro,
        [*writes, ("POST", "/v1/nope"), ("GET", "/v1/status"), ("GET", "/v1/jobs/j")],
    )
    *refused, status, job = answers
    for (method, path), (code, body) in zip([*writes, ("POST", "/v1/nope")], refused, strict=True):
        assert code == 403, (method, path, body)
        assert body["error"]["code"] == "forbidden" and FIX in body["error"]["message"]
    assert status[0] == 200 and status[1]["state"] == "NeedsLogin"
    assert job[0] == 404  # reads reach their route


@pytest.mark.parametrize("which", ["main", "ro"])
def test_member_may_write_through_either_socket(backend: Backend, which: str) -> None:
    sock = backend.socket if which == "main" else backend.ro
    [(code, body)] = raw_requests(member(), sock, [("POST", "/v1/up")])
    # Past the permission check: refused only because nobody logged in yet.
    assert code == 409 and body["error"]["code"] == "not_logged_in"


def test_member_cli_uses_the_main_socket(backend: Backend) -> None:
    up = pcloud_as(member(), backend.socket, "up")
    assert up.returncode == 1 and up.stderr.startswith("pcloud: not logged in")


def test_without_the_ro_socket_a_non_member_is_told_it_has_no_permission() -> None:
    b = Backend("--no-readonly-socket")
    try:
        assert b.socket.exists() and not b.ro.exists()
        out = pcloud_as(NOBODY, b.socket, "status")
        assert out.returncode == 1
        assert out.stderr.startswith(f"pcloud: no permission to open {b.socket}")
        assert FIX in out.stderr
    finally:
        b.stop()
