"""What a newcomer meets on the server (issue 18), against a real `pcloud-server` process:
`admin nodes tag|rename` by hostname, `policy check` in words (warnings, why a test failed,
who loses whom), a hung server as a one-line timeout (no traceback), registration errors that
name the fix, and `/` answering a browser with a page that says what this is and how to join
(that one in-process, `coord_app`: no real process needed to read a page)."""

from __future__ import annotations

import base64
import json
import os
import signal
from pathlib import Path

import httpx

from tests.support.coord import CoordServer, wait_until
from tests.support.inproc import CoordApp


def register(coord: CoordServer, key: str, hostname: str) -> httpx.Response:
    with coord.client(key) as c:
        body = {"public_key": base64.b64encode(os.urandom(32)).decode(), "hostname": hostname}
        return c.post("/api/v1/nodes/register", json=body)


def test_nodes_tag_and_rename_by_hostname(coord: CoordServer) -> None:
    coord.admin("users", "create", "alice", input="password123\n")
    key = json.loads(
        coord.admin("--json", "auth-keys", "create", "--user", "alice", "--reusable").stdout
    )["key"]
    for name in ("rpi112", "laptop"):
        assert register(coord, key, name).status_code == 200
    out = coord.admin("nodes", "tag", "rpi112", "tag:server,tag:nas").stdout
    assert "rpi112" in out and "tag:server,tag:nas" in out
    coord.admin("nodes", "rename", "laptop", "alice-laptop")
    nodes = {n["hostname"]: n for n in json.loads(coord.admin("--json", "nodes", "list").stdout)}
    assert set(nodes) == {"rpi112", "alice-laptop"}
    assert nodes["rpi112"]["tags"] == ["tag:server", "tag:nas"]
    assert "tag:server,tag:nas" in coord.admin("nodes", "list").stdout  # a tags column
    coord.admin("nodes", "tag", str(nodes["rpi112"]["node_id"]), "")  # by id; '' clears
    assert json.loads(coord.admin("--json", "nodes", "list").stdout)[0]["tags"] == []
    bad = coord.admin("nodes", "rename", "nosuch", "x", check=False)
    assert bad.returncode == 1 and "no node named 'nosuch'" in bad.stderr


def test_policy_check_says_warnings_failed_tests_and_losses(
    coord: CoordServer, tmp_path: Path
) -> None:
    coord.admin("users", "create", "alice", input="password123\n")
    key = json.loads(
        coord.admin("--json", "auth-keys", "create", "--user", "alice", "--reusable").stdout
    )["key"]
    for name in ("rpi112", "laptop"):
        assert register(coord, key, name).status_code == 200
    policy = tmp_path / "policy.hujson"
    nodes = json.loads(coord.admin("--json", "nodes", "list").stdout)
    address = next(n["address"] for n in nodes if n["hostname"] == "rpi112")
    document = {
        "hosts": {"rpi112": f"{address}/32"},
        "acls": [],
        "ssh": [],
        "tests": [{"src": "alice@", "accept": ["rpi112:22"]}],
    }
    policy.write_text(json.dumps(document))
    res = coord.admin("policy", "check", str(policy), check=False)
    assert res.returncode == 1
    out = res.stdout
    assert out.startswith("REFUSED:")
    assert "warning: section 'ssh'" in out
    # Why the test failed, naming the devices by hostname (not "node 2 -> node 1").
    assert "alice@ cannot reach rpi112:22 (laptop -> rpi112)" in out, out
    assert "node 1" not in out and "node 2" not in out
    assert "laptop loses rpi112" in out and "rpi112 loses laptop" in out
    assert "+-" not in out
    refused = coord.admin("policy", "set", str(policy), check=False)
    assert refused.returncode == 1 and "(laptop -> rpi112)" in refused.stderr


def test_hung_server_is_a_timeout_message_not_a_traceback(coord: CoordServer) -> None:
    assert coord.proc is not None
    os.kill(coord.proc.pid, signal.SIGSTOP)
    try:
        res = coord.admin("--timeout", "1", "nodes", "list", check=False)
    finally:
        os.kill(coord.proc.pid, signal.SIGCONT)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert "did not answer within 1 s" in res.stderr and "restart it" in res.stderr


def test_admin_without_server_state_names_the_default(tmp_path: Path) -> None:
    res = CoordServer(tmp_path / "none").admin("users", "list", check=False)
    assert res.returncode == 1
    assert "no coordination server state in" in res.stderr
    assert "/var/lib/pcloud/server" in res.stderr  # the default, where install-server puts it


def test_registration_errors_name_the_fix(coord: CoordServer) -> None:
    coord.admin("users", "create", "bob", input="password123\n")
    garbage = register(coord, "garbage", "pi")
    assert garbage.status_code == 401
    message = garbage.json()["error"]["message"]
    assert "not a PCloud auth key" in message and "auth-keys create" in message
    key = json.loads(
        coord.admin("--json", "auth-keys", "create", "--user", "bob", "--expiration", "1s").stdout
    )["key"]

    def expired() -> str | None:
        r = register(coord, key, "pi")
        text = r.json()["error"]["message"] if r.status_code == 401 else ""
        return text if "expired" in text else None

    text = wait_until(expired, timeout=15, what="the 1 s key to expire", interval=0.25)
    assert "ask an admin for a new one" in text and "--user bob" in text


def test_root_answers_a_browser_with_how_to_join(coord_app: CoordApp) -> None:
    with coord_app.client() as c:
        r = c.get("/", headers={"accept": "text/html"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "PCloud coordination server" in page
    # The join link the wizard shows opens this page, and the page shows it back, pinned.
    assert f"pcloud login '{coord_app.url}/#fp=sha256:{coord_app.fingerprint}'" in page
    assert "pcloud-backend" in page and "users create" in page
    assert "default-src 'none'" in r.headers["content-security-policy"]
