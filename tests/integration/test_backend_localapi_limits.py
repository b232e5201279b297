"""The security review's local-API attacks (findings 4, 9, 10) against a real `pcloud-backend`
(fake WireGuard driver), by callers with other credentials (`setpriv`, tests/support/
localapi_attack.py):

- a 64 MiB header bomb on the world-connectable `.ro` socket is answered 431 after ~16 KiB and
  the backend's RSS stays put; more than 100 headers is 431 too;
- a connection that never finishes its head is closed at the deadline;
- one uid cannot hold more than `api_max_connections_per_uid` connections, nor more than 8
  event streams; root is not limited;
- a `pcloud` group member may not name the `k3s_binary` that root installs (403 naming the
  rule); root still may.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_backend_localapi_tiers import NOBODY, Backend, member

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to act as other users",
)

CAP = 12  # connections per uid in this backend (the default is 32)
ATTACK = Path(__file__).resolve().parents[1] / "support" / "localapi_attack.py"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    d = tmp_path_factory.mktemp("limits")
    os.chmod(d, 0o755)
    config = d / "limits.toml"
    # Settings without a flag come from the TOML file; this later --config wins over Backend's.
    config.write_text(f"api_head_timeout_s = 2\napi_max_connections_per_uid = {CAP}\n")
    # Jobs started here (root's install-server) write under a private root, never "/".
    b = Backend("--config", str(config), "--system-root", str(d / "root"))
    yield b
    b.stop()


def attack(user: list[str], *args: str) -> Any:
    out = subprocess.run(
        ["setpriv", *user, sys.executable, str(ATTACK), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def error_code(answer: str) -> str:
    return str(json.loads(answer.partition("\r\n\r\n")[2])["error"]["code"])


def test_a_header_bomb_on_the_ro_socket_is_answered_431(backend: Backend) -> None:
    before = rss_mib(backend.proc.pid)
    sent, answer = attack(NOBODY, "header_bomb", str(backend.ro))
    assert answer.startswith("HTTP/1.1 431 "), answer[:200]
    assert error_code(answer) == "header_too_large"
    assert sent < 8 * 2**20, sent
    assert rss_mib(backend.proc.pid) - before < 20


def test_more_than_100_headers_are_answered_431(backend: Backend) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(backend.ro))) as c:
        r = c.get("http://pcloud/v1/status", headers={f"x-{i}": "y" for i in range(120)})
        assert r.status_code == 431 and "100 headers" in r.json()["error"]["message"]
        assert c.get("http://pcloud/v1/status").status_code == 200


def test_a_connection_that_never_finishes_its_head_is_closed(backend: Backend) -> None:
    data, seconds = attack(NOBODY, "slow_head", str(backend.ro))
    assert data == "" and 1.5 < seconds < 5, (data, seconds)
    assert "sent no complete request within 2 s" in backend.log.read_text()


def test_one_uid_cannot_hold_more_than_its_share_of_connections(backend: Backend) -> None:
    refused, answer = attack(NOBODY, "hold", str(backend.ro), str(CAP))
    assert refused.startswith("HTTP/1.1 503 ") and error_code(refused) == "too_many_connections"
    assert f"uid 65534 already holds {CAP} connections" in refused
    assert answer.startswith("HTTP/1.1 200"), answer  # a closed connection frees its slot
    assert "refused a connection from uid 65534" in backend.log.read_text()
    # root is not limited.
    socks = [socket.socket(socket.AF_UNIX) for _ in range(CAP * 3)]
    try:
        for s in socks:
            s.connect(str(backend.ro))
        socks[-1].sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        socks[-1].settimeout(5)
        assert socks[-1].recv(100).startswith(b"HTTP/1.1 200")
    finally:
        for s in socks:
            s.close()


def test_event_streams_are_capped_per_uid(backend: Backend) -> None:
    assert attack(NOBODY, "streams", str(backend.ro), "9") == [200] * 8 + [429]
    # Each uid has its own streams: a member of the group gets its 8 too.
    assert attack(member(), "streams", str(backend.socket), "8") == [200] * 8


@pytest.mark.parametrize("route", ["/v1/install-server", "/v1/join-server"])
def test_a_group_member_cannot_choose_the_k3s_binary(backend: Backend, route: str) -> None:
    body = json.dumps({"k3s_binary": "/tmp/evil"})
    status, answer = attack(member(), "post", str(backend.socket), route, body)
    assert status == 403 and answer["error"]["code"] == "forbidden", answer
    assert "only root may choose the K3s binary (k3s_binary)" in answer["error"]["message"]
    assert "pinned K3s release" in answer["error"]["message"]


def test_root_may_still_choose_the_k3s_binary(backend: Backend) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(backend.socket))) as c:
        r = c.post("http://pcloud/v1/join-server", json={"k3s_binary": "/tmp/k3s-test"})
    # Past the rule: the job starts (and then fails, as this device is not logged in).
    assert r.status_code == 200, r.text
    assert r.json()["job_id"]
