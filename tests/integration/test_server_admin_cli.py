"""`pcloud-server admin ...` against a running server (admin socket) and a stopped one (in-process)."""

from __future__ import annotations

import base64
import json
import os

from tests.support.coord import CoordServer


def test_admin_cli_through_running_server(coord: CoordServer) -> None:
    coord.admin("users", "create", "alice", "--admin", input="password123\n")
    users = json.loads(coord.admin("--json", "users", "list").stdout)
    assert [u["username"] for u in users] == ["alice"]
    created = json.loads(
        coord.admin(
            "--json", "auth-keys", "create", "--user", "alice", "--reusable", "--expiration", "2h"
        ).stdout
    )
    assert created["key"].startswith("pcak_")
    table = coord.admin("auth-keys", "list").stdout
    assert created["prefix"] in table and created["key"] not in table
    # The running server saw the change at once: the key registers a node over HTTPS.
    with coord.client(created["key"]) as c:
        key = base64.b64encode(os.urandom(32)).decode()
        r = c.post("/api/v1/nodes/register", json={"public_key": key, "hostname": "pi"})
        assert r.status_code == 200, r.text
    nodes = json.loads(coord.admin("--json", "nodes", "list").stdout)
    assert [(n["hostname"], n["user"]) for n in nodes] == [("pi", "alice")]
    coord.admin("nodes", "set-role", str(nodes[0]["node_id"]), "server")
    assert json.loads(coord.admin("--json", "nodes", "list").stdout)[0]["role"] == "server"
    bad = coord.admin("users", "delete", "nobody", check=False)
    assert bad.returncode == 1 and "does not exist" in bad.stderr


def test_admin_cli_policy_and_offline(coord: CoordServer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    policy = tmp_path / "policy.hujson"
    policy.write_text('{ "acls": [ {"action": "accept", "src": ["*"], "dst": ["*:*"]}, ], }')
    coord.admin("users", "create", "ops", input="password123\n")
    assert "ok" in coord.admin("policy", "check", str(policy)).stdout
    coord.admin("policy", "set", str(policy))
    assert '"acls"' in coord.admin("policy", "get").stdout
    broken = tmp_path / "broken.hujson"
    broken.write_text('{"acls": [{"action": "accept", "src": ["group:ghosts"], "dst": ["*:22"]}]}')
    res = coord.admin("policy", "check", str(broken), check=False)
    assert res.returncode == 1 and "group:ghosts" in res.stdout
    coord.stop()
    # No server running: the CLI opens the state dir itself.
    coord.admin("users", "create", "late", input="password123\n")
    names = [u["username"] for u in json.loads(coord.admin("--json", "users", "list").stdout)]
    assert names == ["late", "ops"]
    coord.start()
    with coord.client() as c:
        assert c.get("/api/v1/health").json()["needs_setup"] is False
