"""The backend core against the REAL coordination server (a `pcloud-server` process over HTTPS
on loopback), with the in-memory WireGuard driver: login, pinning, netmaps between two devices,
endpoints, the private key's secrecy, restart while the server is down, logout, removal."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pcloud.backend.config import BackendSettings
from pcloud.backend.errors import LoginFailed
from pcloud.backend.local import LocalBackend
from pcloud.backend.localapi.schemas import LoginRequest
from pcloud.backend.state import State
from pcloud.backend.wg.fake import FakeDriver
from tests.support.coord import CoordServer

PASSWORD = "correct horse battery"


@pytest.fixture
def auth_key(coord: CoordServer) -> str:
    coord.admin("users", "create", "alice", "--password-stdin", input=PASSWORD + "\n")
    out = coord.admin("--json", "auth-keys", "create", "--user", "alice", "--reusable")
    key: str = json.loads(out.stdout)["key"]
    return key


class Captured:
    """Everything the backend sends to the coordination server."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def on_request(self, request: httpx.Request) -> None:
        self.sent.append(str(request.url).encode())
        self.sent.extend(f"{k}: {v}".encode() for k, v in request.headers.items())
        self.sent.append(request.content)

    def blob(self) -> bytes:
        return b"\n".join(self.sent)


def settings(tmp_path: Path, name: str) -> BackendSettings:
    return BackendSettings(
        state_dir=tmp_path / name,
        socket=tmp_path / f"{name}.sock",
        hostname=name,
        driver="fake",
        endpoint_check_s=0.5,
        poll_timeout=5,
    )


async def until(pred: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    """Wait for a condition with a deadline (the backend's work happens in its own tasks)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def make_backend(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[LocalBackend] = []

    async def make(name: str, captured: Captured | None = None) -> LocalBackend:
        hooks = {"request": [captured.on_request]} if captured else None
        b = LocalBackend(settings(tmp_path, name), FakeDriver(), control_hooks=hooks)
        await b.start()
        started.append(b)
        return b

    yield make
    for b in started:
        await b.shutdown()


def peer_names(b: LocalBackend) -> set[str]:
    return {p.hostname for p in b.netmap.peers} if b.netmap else set()


async def test_login_pins_ca_runs_and_never_leaks_the_private_key(
    coord: CoordServer,
    auth_key: str,
    make_backend: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    captured = Captured()
    b: LocalBackend = await make_backend("laptop", captured)
    assert b.state is State.NEEDS_LOGIN
    await b.login(LoginRequest(server_url=coord.join_link, auth_key=auth_key))
    assert b.state is State.RUNNING
    driver = b.driver
    assert isinstance(driver, FakeDriver) and driver.config is not None
    assert driver.config.address.endswith("/24") and b.node is not None
    assert driver.config.address.split("/")[0] == b.node.address
    # Files: token and key 0600, CA saved and equal to the pinned one.
    for path in (b.store.node_path, b.store.key_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b.store.load_ca() == (coord.state_dir / "tls" / "ca.pem").read_text()
    # Let the housekeeping loop report endpoints and the long poll run a little.
    await until(lambda: b.housekeeping.reported is not None, "endpoints reported")
    private = b.store.key_path.read_text().strip()
    forms = [
        private.encode(),
        base64.b64decode(private).hex().encode(),
        base64.urlsafe_b64encode(base64.b64decode(private)).rstrip(b"="),
    ]
    sent = captured.blob()
    assert b"/api/v1/nodes/register" in sent and b"/api/v1/netmap" in sent
    assert b.session.key.public_key().encode() in sent
    for form in forms:
        assert form not in sent, "private key sent to the coordination server"
        assert form.decode() not in caplog.text, "private key written to the log"
    assert auth_key not in caplog.text and b.node.node_token not in caplog.text


async def test_fingerprint_mismatch_is_refused(coord: CoordServer, make_backend: Any) -> None:
    b: LocalBackend = await make_backend("laptop")
    wrong = coord.join_link.rpartition("sha256:")[0] + "sha256:" + "0" * 64
    with pytest.raises(LoginFailed, match="fingerprint mismatch"):
        await b.login(LoginRequest(server_url=wrong, auth_key="whatever"))
    assert b.state is State.NEEDS_LOGIN and b.store.load_ca() is None


async def test_bad_credentials_are_reported(
    coord: CoordServer, auth_key: str, make_backend: Any
) -> None:
    b: LocalBackend = await make_backend("laptop")
    with pytest.raises(LoginFailed) as info:
        await b.login(
            LoginRequest(server_url=coord.join_link, username="alice", password="wrong password")
        )
    assert info.value.http_status == 401
    with pytest.raises(LoginFailed):
        await b.login(LoginRequest(server_url=coord.join_link, auth_key="pcak_nope_nope"))
    await b.login(LoginRequest(server_url=coord.join_link, username="alice", password=PASSWORD))
    assert b.state is State.RUNNING


async def test_relay_hands_on_the_servers_own_answers(
    coord: CoordServer, auth_key: str, make_backend: Any
) -> None:
    b: LocalBackend = await make_backend("laptop")
    await b.login(LoginRequest(server_url=coord.join_link, auth_key=auth_key))
    status, health = await b.relay("get", "/health")
    assert status == 200 and health["status"] == "ok"
    # An error answer comes back as the server gave it, for the GUI to show.
    status, refused = await b.relay("GET", "/users", token="not-a-token")
    assert status == 401 and refused["error"]["code"]


async def test_two_devices_get_each_other_with_endpoints(
    coord: CoordServer, auth_key: str, make_backend: Any
) -> None:
    a: LocalBackend = await make_backend("laptop")
    b: LocalBackend = await make_backend("rpi111")
    await a.login(LoginRequest(server_url=coord.join_link, auth_key=auth_key))
    await b.login(LoginRequest(server_url=coord.join_link, auth_key=auth_key))
    await until(lambda: "rpi111" in peer_names(a), "a to learn about b through the long poll")
    assert "laptop" in peer_names(b)
    assert a.node and b.node and a.node.address != b.node.address

    # b's reported endpoints (host addresses, FakeDriver port 51820) reach a's netmap ...
    def b_endpoints() -> list[str]:
        assert a.netmap
        return [e for p in a.netmap.peers if p.hostname == "rpi111" for e in p.endpoints]

    await until(lambda: any(e.endswith(":51820") for e in b_endpoints()), "b's endpoints")

    # ... and a's WireGuard config: b with its /32 and its first candidate as endpoint.
    def b_config() -> Any:
        assert isinstance(a.driver, FakeDriver) and a.driver.config
        return next(
            (p for p in a.driver.config.peers if p.allowed_ips == (f"{b.node.address}/32",)), None
        )  # type: ignore[union-attr]

    cfg = await until(lambda: (c := b_config()) and c.endpoint and c, "b configured on a")
    assert cfg.endpoint in b_endpoints() and cfg.persistent_keepalive == 25
    status = await a.status()
    assert status.state == "Running" and [p.hostname for p in status.peers] == ["rpi111"]
    # b logs out: a loses it, and b forgets its credentials and takes its interface down.
    await b.logout()
    assert b.state is State.NEEDS_LOGIN and b.store.load_node() is None
    assert isinstance(b.driver, FakeDriver) and b.driver.removed
    await until(lambda: "rpi111" not in peer_names(a), "a to drop b after its logout")


async def test_down_up_and_rotate_key(coord: CoordServer, auth_key: str, make_backend: Any) -> None:
    a: LocalBackend = await make_backend("laptop")
    await a.login(LoginRequest(server_url=coord.join_link, auth_key=auth_key))
    assert a.node
    address, old_key = a.node.address, a.session.key.public_key()
    await a.down()
    assert a.state is State.STOPPED and isinstance(a.driver, FakeDriver) and a.driver.removed
    assert a.store.load_prefs().want_running is False
    await a.up()
    assert a.state is State.RUNNING and a.store.load_prefs().want_running is True
    await a.rotate_key()
    assert a.session.key.public_key() != old_key and a.node.address == address
    assert a.driver.config and a.driver.config.private_key == a.session.key.b64()
    assert a.store.key_path.read_text().strip() == a.session.key.b64()


async def test_restart_with_server_down_reconciles_and_recovers(
    coord: CoordServer, auth_key: str, tmp_path: Path
) -> None:
    first = LocalBackend(settings(tmp_path, "laptop"), FakeDriver())
    await first.start()
    await first.login(LoginRequest(server_url=coord.join_link, auth_key=auth_key))
    other = LocalBackend(settings(tmp_path, "rpi111"), FakeDriver())
    await other.start()
    await other.login(LoginRequest(server_url=coord.join_link, auth_key=auth_key))
    await until(lambda: "rpi111" in peer_names(first), "the peer")
    await other.shutdown()
    await first.shutdown()
    driver = first.driver
    assert isinstance(driver, FakeDriver) and not driver.removed  # tunnels left in place
    coord.stop()

    again = LocalBackend(settings(tmp_path, "laptop"), FakeDriver())
    await again.start()
    try:
        # No login, no server: the persisted netmap is applied to the adopted interface.
        assert again.state is State.RUNNING
        assert isinstance(again.driver, FakeDriver) and again.driver.config
        assert len(again.driver.config.peers) == 1
        await until(
            lambda: again.warning and "unreachable" in again.warning,
            "the outage to show as a warning",
        )
        assert again.state is State.RUNNING and "rpi111" in peer_names(again)
        coord.start()
        await until(lambda: again.warning is None, "the poller to reconnect", timeout=60)
        assert again.state is State.RUNNING
    finally:
        await again.shutdown()


async def test_node_deleted_by_admin_needs_login(
    coord: CoordServer, auth_key: str, make_backend: Any
) -> None:
    a: LocalBackend = await make_backend("laptop")
    await a.login(LoginRequest(server_url=coord.join_link, auth_key=auth_key))
    assert a.node
    coord.admin("nodes", "delete", str(a.node.node_id))
    await until(lambda: a.state is State.NEEDS_LOGIN, "the backend to notice its removal")
    status = await a.status()
    assert status.error and "no longer knows this device" in status.error


async def test_poller_fails_over_to_the_next_server(
    coord: CoordServer, auth_key: str, make_backend: Any
) -> None:
    from pcloud.backend.control.client import ControlClient
    from pcloud.backend.control.pinning import pinned_context
    from pcloud.backend.control.poller import Poller, ServerList
    from tests.support.ports import free_port

    a: LocalBackend = await make_backend("laptop")
    await a.login(LoginRequest(server_url=coord.join_link, auth_key=auth_key))
    assert a.node
    ca = a.store.load_ca()
    assert ca
    dead = f"https://127.0.0.1:{free_port()}"  # nobody listens: connection refused
    servers = ServerList(dead)
    servers.update([dead, coord.url])
    got: list[int] = []
    problems: list[str | None] = []

    async def on_netmap(nm: Any) -> None:
        got.append(nm.version)

    async def on_fatal(err: Any) -> None:
        raise AssertionError(err)

    client = ControlClient(pinned_context(ca))
    poller = Poller(
        client,
        servers,
        a.node.node_token,
        since=None,
        on_netmap=on_netmap,
        on_fatal=on_fatal,
        on_reachable=problems.append,
        timeout=1,
    )
    task = asyncio.create_task(poller.run())
    try:
        await until(lambda: got, "a netmap from the second server")
    finally:
        task.cancel()
        await client.aclose()
    assert servers.current == coord.url
    assert problems[0] and "unreachable" in problems[0] and dead in problems[0]


@pytest.fixture
async def serve_local_api(tmp_path: Path) -> AsyncIterator[Callable[[LocalBackend], Any]]:
    """Serve a backend's local API in this process on its sockets, for the `pcloud` CLI run
    as a subprocess (the CLI has its own event loop; ours keeps serving while we await it)."""
    from pcloud.backend.localapi.routes import create_app
    from pcloud.backend.localapi.server import bind_sockets, make_server, remove_sockets

    served: list[tuple[Any, asyncio.Task[None], Path, list[Any]]] = []

    async def serve(backend: LocalBackend) -> Path:
        path = tmp_path / f"{backend.settings.hostname}-api.sock"
        socks = bind_sockets(path)
        server = make_server(create_app(backend, backend_uid=0))
        served.append((server, asyncio.create_task(server.serve(sockets=socks)), path, socks))
        return path

    yield serve
    for server, task, path, socks in served:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        for sock in socks:
            sock.close()
        remove_sockets(path)


async def pcloud(sock: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "pcloud"),
        "--socket",
        str(sock),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_status_json_peers_and_rotate_key(
    coord: CoordServer, auth_key: str, make_backend: Any, serve_local_api: Any
) -> None:
    a: LocalBackend = await make_backend("laptop")
    b: LocalBackend = await make_backend("rpi111")
    await a.login(LoginRequest(server_url=coord.join_link, auth_key=auth_key))
    await b.login(LoginRequest(server_url=coord.join_link, auth_key=auth_key))
    assert a.node and b.node and isinstance(a.driver, FakeDriver)
    b_key = b.session.key.public_key()
    await until(
        lambda: a.netmap and any(p.public_key == b_key and p.online for p in a.netmap.peers),
        "a to see b online",
    )

    def b_endpoint() -> str | None:
        assert isinstance(a.driver, FakeDriver) and a.driver.config
        return next((p.endpoint for p in a.driver.config.peers if p.public_key == b_key), None)

    endpoint = await until(b_endpoint, "b configured on a with an endpoint")
    # What WireGuard would report once b answered on that endpoint.
    handshake = datetime.now(UTC) - timedelta(seconds=3)
    a.driver.set_peer_stats(b_key, last_handshake=handshake, rx_bytes=1200, tx_bytes=800)
    sock = await serve_local_api(a)

    code, out, err = await pcloud(sock, "status", "--json")
    assert code == 0, err
    [peer] = json.loads(out)["peers"]
    assert peer["hostname"] == "rpi111" and peer["address"] == b.node.address
    assert peer["online"] is True and peer["endpoint"] == endpoint
    assert datetime.fromisoformat(peer["last_handshake"]) == handshake

    code, out, err = await pcloud(sock, "peers")
    assert code == 0, err
    header, row = (line.split() for line in out.splitlines())
    assert header == ["HOSTNAME", "IP", "ONLINE", "LAST-HANDSHAKE", "ENDPOINT"]
    assert row[:3] == ["rpi111", b.node.address, "yes"] and row[-1] == endpoint

    address, old_key = a.node.address, a.session.key.public_key()
    code, out, err = await pcloud(sock, "rotate-key")
    assert code == 0, err
    new_key = a.session.key.public_key()
    assert new_key != old_key
    assert out.splitlines() == [f"New public key: {new_key}", f"Address unchanged: {address}"]
    # The rotation reached the server: b's netmap carries a's new key at the same address.
    await until(
        lambda: (
            b.netmap
            and any(p.public_key == new_key and p.address == address for p in b.netmap.peers)
        ),
        "b to learn a's new key",
    )
