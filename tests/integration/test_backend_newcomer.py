"""What a newcomer sees from the backend (issue 18), against a real `pcloud-server` process:
logging in as someone else while logged in names `pcloud logout`; a wrong port is a sentence,
not `ConnectError`; a coordination server that stops answering shows as "Connected,
coordination server unreachable since ..." within seconds, and clears within seconds."""

# ruff: noqa: F811 - the fixtures imported from test_backend_control are parameters here
from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from pcloud.backend.errors import LoginFailed
from pcloud.backend.local import LocalBackend
from pcloud.backend.localapi.schemas import LoginRequest
from pcloud.backend.state import State
from tests.integration.test_backend_control import (  # noqa: F401 - fixtures
    PASSWORD,
    auth_key,
    make_backend,
    until,
)
from tests.support.coord import CoordServer
from tests.support.ports import free_port


async def test_login_as_another_user_while_logged_in_names_logout(
    coord: CoordServer,
    auth_key: str,
    make_backend: Any,
) -> None:
    coord.admin("users", "create", "bob", "--password-stdin", input=PASSWORD + "\n")
    bob_key = json.loads(coord.admin("--json", "auth-keys", "create", "--user", "bob").stdout)
    b: LocalBackend = await make_backend("laptop")
    await b.login(LoginRequest(server_url=coord.join_link, auth_key=auth_key))
    with pytest.raises(LoginFailed) as err:
        await b.login(LoginRequest(server_url=coord.join_link, auth_key=bob_key["key"]))
    assert "logged in as alice" in str(err.value) and "`pcloud logout` first" in str(err.value)
    assert b.state is State.RUNNING  # still alice's device
    # The same account may log in again (idempotent).
    await b.login(LoginRequest(server_url=coord.join_link, username="alice", password=PASSWORD))


async def test_wrong_port_is_a_sentence(coord: CoordServer, make_backend: Any) -> None:
    b: LocalBackend = await make_backend("laptop")
    link = coord.join_link.replace(f":{coord.port}/", f":{free_port()}/")
    with pytest.raises(LoginFailed) as err:
        await b.login(LoginRequest(server_url=link, auth_key="pcak_x"))
    text = str(err.value)
    assert "is pcloud-server running there" in text and "port" in text
    assert "ConnectError" not in text


async def test_unreachable_server_shows_within_seconds_and_clears(
    coord: CoordServer,
    auth_key: str,
    make_backend: Any,
) -> None:
    b: LocalBackend = await make_backend("laptop")
    b.settings.control_probe_s = 1.0  # the default is 5 s: the test need not wait that long
    await b.login(LoginRequest(server_url=coord.join_link, auth_key=auth_key))
    assert (await b.status()).control_unreachable_since is None
    assert coord.proc is not None
    os.kill(coord.proc.pid, signal.SIGSTOP)  # hung: connections open, nothing answers
    stopped = time.monotonic()
    try:
        await until(lambda: b.unreachable_since is not None, "the outage to show", timeout=20)
        seen = time.monotonic() - stopped
        status = await b.status()
        assert status.state == "Running"  # the tunnels keep working
        note = status.unreachable_note() or ""
        assert note.startswith("Connected, coordination server unreachable since "), note
        assert status.error and "pcloud-server is hung" in status.error, status.error
    finally:
        os.kill(coord.proc.pid, signal.SIGCONT)
    resumed = time.monotonic()
    await until(lambda: b.unreachable_since is None, "the outage to clear", timeout=20)
    cleared = time.monotonic() - resumed
    status = await b.status()
    assert status.control_unreachable_since is None and status.error is None
    print(f"outage shown after {seen:.1f} s, cleared {cleared:.1f} s after recovery")
    # Both well under the long poll's minute (a probe every second here, 3 s timeout).
    assert seen < 8 and cleared < 6
