"""The coordination server's API: accounts, registration, policy, netmaps.

Tier: in-process (`coord_app`: the app over a real SQLite state dir, through httpx's
ASGITransport; tests.support.inproc). The tests that need a real `pcloud-server` process take
`coord` (HTTPS on loopback): a restart, the drain of held polls on stop, the log and stdout.
"""

from __future__ import annotations

import asyncio
import base64
import stat
from pathlib import Path

import httpx
import nacl.public
import pytest

from tests.support.coord import ApiHelpers, CoordServer, key_pair
from tests.support.inproc import CoordApp, start_app


def pubkey() -> str:
    return base64.b64encode(bytes(nacl.public.PrivateKey.generate().public_key)).decode()


def register(coord: ApiHelpers, secret: str, hostname: str, **extra: object) -> dict:
    body = {"public_key": pubkey(), "hostname": hostname, "endpoints": ["192.0.2.1:51820"]}
    if extra.get("role") == "server" or secret.startswith("pcak_"):
        # A server-role node (or possibly one, by its key) proves its private key.
        private, body["public_key"] = key_pair()
        body["proof"] = coord.proof(private)
    body.update(extra)
    with coord.client(secret) as c:
        r = c.post("/api/v1/nodes/register", json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())


def peers(netmap: dict) -> set[str]:
    return {p["hostname"] for p in netmap["peers"]}


def err(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


# ---- setup and login ------------------------------------------------------------------------


def test_setup_once_with_the_right_code(coord_app: CoordApp) -> None:
    code_file = coord_app.state_dir / "setup-code"
    assert stat.S_IMODE(code_file.stat().st_mode) == 0o600
    assert code_file.read_text().strip() == coord_app.setup_code
    with coord_app.client() as c:
        assert c.get("/api/v1/health").json()["needs_setup"] is True
        wrong = c.post(
            "/api/v1/setup",
            json={"setup_code": "nope", "username": "admin", "password": "correct horse"},
        )
        assert wrong.status_code == 403
        assert "setup_code" in err(wrong)["message"]
        ok = c.post(
            "/api/v1/setup",
            json={
                "setup_code": coord_app.setup_code,
                "username": "admin",
                "password": "correct horse",
            },
        )
        assert ok.status_code == 200
        assert ok.json()["username"] == "admin" and ok.json()["token"].startswith("pcu_")
        again = c.post(
            "/api/v1/setup",
            json={
                "setup_code": coord_app.setup_code,
                "username": "eve",
                "password": "correct horse",
            },
        )
        assert again.status_code == 409
        assert c.get("/api/v1/health").json()["needs_setup"] is False
    assert not code_file.exists()


def test_login_wrong_password_and_rate_limit(coord_app: CoordApp) -> None:
    coord_app.setup_admin()
    with coord_app.client() as c:
        good = c.post("/api/v1/login", json={"username": "admin", "password": "correct horse"})
        assert good.status_code == 200
        codes = [
            c.post("/api/v1/login", json={"username": "admin", "password": "wrong"}).status_code
            for _ in range(6)
        ]
        assert codes[:5] == [401] * 5
        assert codes[5] == 429
        limited = c.post("/api/v1/login", json={"username": "admin", "password": "correct horse"})
        assert limited.status_code == 429 and "try again" in err(limited)["message"]


def test_users_admin_only_and_deleted_users_token(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    alice = coord_app.create_user(admin, "alice")
    with coord_app.client(alice) as c:
        r = c.post("/api/v1/users", json={"username": "mallory", "password": "password123"})
        assert r.status_code == 403 and "not an admin" in err(r)["message"]
    with coord_app.client(admin) as c:
        dup = c.post("/api/v1/users", json={"username": "alice", "password": "password123"})
        assert dup.status_code == 409
        names = [u["username"] for u in c.get("/api/v1/users").json()]
        assert names == ["admin", "alice"]
        assert c.delete("/api/v1/users/alice").status_code == 204
    with coord_app.client(alice) as c:
        gone = c.get("/api/v1/auth-keys")
        assert gone.status_code == 401 and "user was deleted" in err(gone)["message"]


# ---- registration, addresses, default policy --------------------------------------------------


def test_default_policy_visibility_and_addresses(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    alice = coord_app.create_user(admin, "alice")
    bob = coord_app.create_user(admin, "bob")
    server = register(coord_app, admin, "rpi111", role="server")
    assert server["address"] == "10.0.0.1" and server["network"] == "10.0.0.0/24"
    a1 = register(coord_app, alice, "alice-laptop")
    a2 = register(coord_app, alice, "alice-phone")
    b1 = register(coord_app, bob, "bob-laptop")
    addresses = {n["address"] for n in (server, a1, a2, b1)}
    assert len(addresses) == 4
    with coord_app.client(a1["node_token"]) as c:
        nm = c.get("/api/v1/netmap").json()
    assert nm["full"] is True
    assert peers(nm) == {"rpi111", "alice-phone"}  # never bob's laptop
    with coord_app.client(b1["node_token"]) as c:
        assert peers(c.get("/api/v1/netmap").json()) == {"rpi111"}
    with coord_app.client(server["node_token"]) as c:
        # The admin's server reaches everything, so everyone sees each other with it.
        assert peers(c.get("/api/v1/netmap").json()) == {
            "alice-laptop",
            "alice-phone",
            "bob-laptop",
        }


def test_same_key_same_node_other_owner_conflict(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    alice = coord_app.create_user(admin, "alice")
    bob = coord_app.create_user(admin, "bob")
    key = pubkey()
    body = {"public_key": key, "hostname": "laptop", "endpoints": []}
    with coord_app.client(alice) as c:
        first = c.post("/api/v1/nodes/register", json=body).json()
        second = c.post("/api/v1/nodes/register", json=body).json()
    assert (first["node_id"], first["address"]) == (second["node_id"], second["address"])
    with coord_app.client(bob) as c:
        r = c.post("/api/v1/nodes/register", json=body)
    assert r.status_code == 409 and "public_key" in err(r)["message"]


def test_rotate_key_keeps_address(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    node = register(coord_app, admin, "laptop")
    new_key = pubkey()
    with coord_app.client(node["node_token"]) as c:
        r = c.post("/api/v1/nodes/self/rotate-key", json={"public_key": new_key})
        assert r.json() == {"node_id": node["node_id"], "address": node["address"]}
        assert c.get("/api/v1/netmap").json()["self"]["public_key"] == new_key


def test_exhaustion_is_409_and_servers_keep_their_reserve(tmp_path: Path) -> None:
    coord_app = start_app(tmp_path / "small", network="10.9.0.0/29")
    try:
        admin = coord_app.setup_admin()
        # 6 usable addresses: the first-server slot and a reserve of one stay for servers.
        made = [register(coord_app, admin, f"n{i}")["address"] for i in range(4)]
        assert made == [f"10.9.0.{i}" for i in range(2, 6)]
        body = {"public_key": pubkey(), "hostname": "one-too-many", "endpoints": []}
        with coord_app.client(admin) as c:
            r = c.post("/api/v1/nodes/register", json=body)
        assert r.status_code == 409
        assert err(r)["code"] == "network_exhausted" and "kept for server" in err(r)["message"]
        servers = [register(coord_app, admin, f"s{i}", role="server")["address"] for i in range(2)]
        assert servers == ["10.9.0.1", "10.9.0.6"]
        body = {"public_key": pubkey(), "hostname": "late-server", "role": "server"}
        private, body["public_key"] = key_pair()
        body["proof"] = coord_app.proof(private)
        with coord_app.client(admin) as c:
            r = c.post("/api/v1/nodes/register", json=body)
        assert r.status_code == 409 and err(r)["code"] == "network_exhausted"
    finally:
        coord_app.stop()


# ---- auth keys --------------------------------------------------------------------------------


def test_auth_keys_single_use_expired_hashed(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    coord_app.create_user(admin, "alice")
    single = coord_app.auth_key(admin, user="alice")
    node = register(coord_app, single, "pi")
    with coord_app.client(node["node_token"]) as c:
        assert c.get("/api/v1/netmap").json()["self"]["user"] == "alice"
    with coord_app.client(single) as c:
        r = c.post("/api/v1/nodes/register", json={"public_key": pubkey(), "hostname": "pi2"})
    assert r.status_code == 401 and "already used" in err(r)["message"]
    reusable = coord_app.auth_key(admin, user="alice", reusable=True)
    register(coord_app, reusable, "pi3")
    register(coord_app, reusable, "pi4")
    with coord_app.client(admin) as c:
        listed = c.get("/api/v1/auth-keys").json()
        assert {k["prefix"] for k in listed} == {single.split("_")[1], reusable.split("_")[1]}
        assert all("key" not in k for k in listed)
        assert c.delete(f"/api/v1/auth-keys/{reusable.split('_')[1]}").status_code == 204
    with coord_app.client(reusable) as c:
        r = c.post("/api/v1/nodes/register", json={"public_key": pubkey(), "hostname": "pi5"})
    assert r.status_code == 401
    # Stored hashed: the plain key is nowhere in the database file.
    db = b"".join(p.read_bytes() for p in coord_app.state_dir.glob("pcloud.db*"))
    assert single.encode() not in db and reusable.encode() not in db


def test_server_role_needs_admin_or_server_key(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    alice = coord_app.create_user(admin, "alice")
    with coord_app.client(alice) as c:
        r = c.post(
            "/api/v1/nodes/register",
            json={"public_key": pubkey(), "hostname": "x", "role": "server"},
        )
        assert r.status_code == 403
        r = c.post("/api/v1/auth-keys", json={"role": "server"})
        assert r.status_code == 403
    key = coord_app.auth_key(admin, user="admin", role="server", tags=["tag:server"])
    node = register(coord_app, key, "rpi112")
    assert node["netmap"]["self"]["role"] == "server"
    assert node["netmap"]["self"]["tags"] == ["tag:server"]


# ---- policy -----------------------------------------------------------------------------------

POLICY = """
// Headscale-style policy: comments and trailing commas are fine.
{
  "groups": { "group:ops": ["alice@"], },
  "tagOwners": { "tag:server": ["group:ops"], },
  "acls": [
    { "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"] },
    { "action": "accept", "src": ["group:ops"], "dst": ["tag:server:22,443"] },
  ],
  "tests": [
    { "src": "alice@", "accept": ["tag:server:22"], "deny": ["tag:server:80"] },
  ],
}
"""


def test_custom_policy_tags_groups_and_tests(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    alice = coord_app.create_user(admin, "alice")
    bob = coord_app.create_user(admin, "bob")
    server_key = coord_app.auth_key(admin, user="admin", role="server", tags=["tag:server"])
    srv = register(coord_app, server_key, "rpi111")
    a1 = register(coord_app, alice, "alice-laptop")
    b1 = register(coord_app, bob, "bob-laptop")
    with coord_app.client(admin) as c:
        r = c.put("/api/v1/acl", content=POLICY, headers={"content-type": "application/hujson"})
        assert r.status_code == 200, r.text
        assert c.get("/api/v1/acl").json()["policy"] == POLICY
    with coord_app.client(a1["node_token"]) as c:
        assert peers(c.get("/api/v1/netmap").json()) == {"rpi111"}
    with coord_app.client(b1["node_token"]) as c:
        assert peers(c.get("/api/v1/netmap").json()) == set()
    with coord_app.client(srv["node_token"]) as c:
        assert peers(c.get("/api/v1/netmap").json()) == {"alice-laptop"}

    failing = POLICY.replace('"deny": ["tag:server:80"]', '"deny": ["tag:server:443"]')
    with coord_app.client(admin) as c:
        r = c.put("/api/v1/acl", content=failing)
        assert r.status_code == 400 and err(r)["code"] == "policy_test_failed"
        assert c.get("/api/v1/acl").json()["policy"] == POLICY  # nothing half-written
        bad = c.put(
            "/api/v1/acl",
            content='{"acls": [{"action": "accept", "src": ["group:nope"], "dst": ["*:*"]}]}',
        )
        assert bad.status_code == 400 and "group:nope" in err(bad)["message"]
        assert "acls[0]" in err(bad)["message"]
        unknown = c.put("/api/v1/acl", content='{"postures": {}}')
        assert unknown.status_code == 400 and "postures" in err(unknown)["message"]
        warn = c.put("/api/v1/acl", content='{"ssh": [], "acls": []}')
        assert warn.status_code == 200 and any("ssh" in w for w in warn.json()["warnings"])
        assert c.delete("/api/v1/acl").json()["ok"] is True
        assert c.get("/api/v1/acl").json()["policy"] is None


def test_acl_check_is_a_dry_run(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    alice = coord_app.create_user(admin, "alice")
    bob = coord_app.create_user(admin, "bob")
    register(coord_app, alice, "alice-laptop")
    register(coord_app, bob, "bob-laptop")
    open_policy = '{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}'
    with coord_app.client(admin) as c:
        r = c.post("/api/v1/acl/check", content=open_policy)
        assert r.status_code == 200
        body = r.json()
        assert body["ok"] is True
        changes = {ch["node"]: ch for ch in body["changes"]}
        assert changes["alice-laptop"]["gains"] == ["bob-laptop"]
        assert changes["bob-laptop"]["gains"] == ["alice-laptop"]
        assert c.get("/api/v1/acl").json()["policy"] is None  # nothing applied
        bad = c.post("/api/v1/acl/check", content='{"acls": [{"action": "deny"}]}')
        assert bad.status_code == 200 and bad.json()["ok"] is False and bad.json()["errors"]


# ---- long polls and deltas --------------------------------------------------------------------


async def test_long_poll_wakes_only_affected_nodes(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    alice = coord_app.create_user(admin, "alice")
    bob = coord_app.create_user(admin, "bob")
    a1 = register(coord_app, alice, "alice-laptop")
    b1 = register(coord_app, bob, "bob-laptop")
    va, vb = a1["netmap"]["version"], b1["netmap"]["version"]
    async with (
        coord_app.async_client(a1["node_token"]) as ca,
        coord_app.async_client(b1["node_token"]) as cb,
    ):
        # The first answer at a stale version is a delta; catch both up to "now".
        va = (await ca.get("/api/v1/netmap", params={"since": va, "timeout": 0})).json()["version"]
        poll_a = asyncio.create_task(ca.get("/api/v1/netmap", params={"since": va, "timeout": 20}))
        poll_b = asyncio.create_task(cb.get("/api/v1/netmap", params={"since": vb, "timeout": 3}))
        await asyncio.sleep(0.3)  # let both polls reach the server; the assertion is below
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.to_thread(register, coord_app, alice, "alice-phone")
        answer_a = (await poll_a).json()
        woke_after = loop.time() - started
        answer_b = (await poll_b).json()
    assert answer_a["full"] is False
    assert [p["hostname"] for p in answer_a["peers_changed"]] == ["alice-phone"]
    assert woke_after < 2
    # Bob's view did not change: his poll ran to its timeout and came back empty.
    assert answer_b["version"] == vb and answer_b["peers_changed"] == []
    assert answer_b["peers_removed"] == []


def test_poll_timeout_unknown_version_and_removal(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    a = register(coord_app, admin, "a")
    b = register(coord_app, admin, "b")
    with coord_app.client(a["node_token"]) as c:
        v = c.get("/api/v1/netmap").json()["version"]
        quiet = c.get("/api/v1/netmap", params={"since": v, "timeout": 0.2}).json()
        assert quiet == {
            **quiet,
            "version": v,
            "full": False,
            "peers_changed": [],
            "peers_removed": [],
        }
        future = c.get("/api/v1/netmap", params={"since": v + 1000, "timeout": 1}).json()
        assert future["full"] is True and peers(future) == {"b"}
    with coord_app.client(admin) as c:
        assert c.delete(f"/api/v1/nodes/{b['node_id']}").status_code == 204
    with coord_app.client(a["node_token"]) as c:
        gone = c.get("/api/v1/netmap", params={"since": v, "timeout": 5}).json()
        assert gone["peers_removed"] == [b["node_id"]] and gone["full"] is False
    with coord_app.client(b["node_token"]) as c:
        assert c.get("/api/v1/netmap").status_code == 401


def test_policy_isolation_sends_explicit_removals(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    a = register(coord_app, admin, "a")
    b = register(coord_app, admin, "b")
    with coord_app.client(a["node_token"]) as c:
        v = c.get("/api/v1/netmap").json()["version"]
    with coord_app.client(admin) as c:
        assert c.put("/api/v1/acl", content='{"acls": []}').status_code == 200
    with coord_app.client(a["node_token"]) as c:
        nm = c.get("/api/v1/netmap", params={"since": v, "timeout": 5}).json()
    assert nm["full"] is False and nm["peers_removed"] == [b["node_id"]]


def test_endpoints_update_reaches_peers(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    a = register(coord_app, admin, "a")
    b = register(coord_app, admin, "b")
    with coord_app.client(a["node_token"]) as c:
        v = c.get("/api/v1/netmap").json()["version"]
    with coord_app.client(b["node_token"]) as c:
        r = c.put("/api/v1/nodes/self/endpoints", json={"endpoints": ["198.51.100.7:41641"]})
        assert r.status_code == 204
    with coord_app.client(a["node_token"]) as c:
        nm = c.get("/api/v1/netmap", params={"since": v, "timeout": 5}).json()
    assert nm["peers_changed"][0]["endpoints"] == ["198.51.100.7:41641"]


def test_restart_keeps_everything(coord: CoordServer) -> None:
    admin = coord.setup_admin()
    a = register(coord, admin, "a")
    b = register(coord, admin, "b")
    with coord.client(a["node_token"]) as c:
        before = c.get("/api/v1/netmap").json()
    coord.restart()
    with coord.client(a["node_token"]) as c:
        # The version survives, so a poll at the held version waits instead of resending all.
        quiet = c.get("/api/v1/netmap", params={"since": before["version"], "timeout": 0.2})
        assert quiet.json()["version"] >= before["version"]
        after = c.get("/api/v1/netmap").json()
    assert peers(after) == {"b"} and after["self"]["address"] == a["address"]
    assert after["version"] >= before["version"]
    with coord.client(admin) as c:
        assert [u["username"] for u in c.get("/api/v1/users").json()] == ["admin"]
    again = register(coord, admin, "c")
    assert again["address"] not in {a["address"], b["address"]}


def test_cached_peer_json_follows_every_change(coord_app: CoordApp) -> None:
    """Answers are joined from each peer's cached JSON: every kind of change to a peer (its
    endpoints, its presence, an admin's rename) must show in full maps and deltas alike."""
    admin = coord_app.setup_admin()
    a = register(coord_app, admin, "a")
    b = register(coord_app, admin, "b")

    def b_in(nm: dict, key: str = "peers") -> dict:
        return next(p for p in nm[key] if p["node_id"] == b["node_id"])

    with coord_app.client(a["node_token"]) as ca, coord_app.client(b["node_token"]) as cb:
        first = ca.get("/api/v1/netmap").json()
        assert b_in(first)["online"] is False and b_in(first)["endpoints"] == ["192.0.2.1:51820"]
        v = first["version"]
        # b's own poll makes it online: a's delta and a fresh full map both say so.
        cb.get("/api/v1/netmap", params={"timeout": 0})
        nm = ca.get("/api/v1/netmap", params={"since": v, "timeout": 5}).json()
        assert b_in(nm, "peers_changed")["online"] is True
        assert b_in(ca.get("/api/v1/netmap").json())["online"] is True
        v = nm["version"]
        r = cb.put("/api/v1/nodes/self/endpoints", json={"endpoints": ["198.51.100.9:41641"]})
        assert r.status_code == 204
        nm = ca.get("/api/v1/netmap", params={"since": v, "timeout": 5}).json()
        assert b_in(nm, "peers_changed")["endpoints"][-1] == "198.51.100.9:41641"
        assert b_in(ca.get("/api/v1/netmap").json())["endpoints"][-1] == "198.51.100.9:41641"
        v = nm["version"]
        with coord_app.client(admin) as c:
            r = c.patch(f"/api/v1/nodes/{b['node_id']}", json={"hostname": "b-renamed"})
            assert r.status_code == 200, r.text
        nm = ca.get("/api/v1/netmap", params={"since": v, "timeout": 5}).json()
        assert b_in(nm, "peers_changed")["hostname"] == "b-renamed"
        assert b_in(ca.get("/api/v1/netmap").json())["hostname"] == "b-renamed"
        # Its own record too: b's answer carries the new name as `self`.
        assert cb.get("/api/v1/netmap", params={"timeout": 0}).json()["self"]["hostname"] == (
            "b-renamed"
        )


def test_netmap_fast_path_and_route_agree(coord_app: CoordApp) -> None:
    """Well-formed polls are served by a lean ASGI path, the rest by the FastAPI route: same
    answers, same errors, same metrics."""
    admin = coord_app.setup_admin()
    a = register(coord_app, admin, "a")
    register(coord_app, admin, "b")
    with coord_app.client(a["node_token"]) as c:
        lean = c.get("/api/v1/netmap", params={"timeout": 0})
        # An extra parameter is not the plain form: the FastAPI route answers this one.
        routed = c.get("/api/v1/netmap", params={"timeout": 0, "extra": "1"})
        assert lean.status_code == routed.status_code == 200
        assert lean.headers["content-type"] == routed.headers["content-type"]
        assert lean.json() == routed.json() and lean.json()["full"] is True
        v = lean.json()["version"]
        quiet = c.get(
            "/api/v1/netmap",
            params={"since": v, "timeout": "0.2"},
            headers={"Authorization": f"bearer {a['node_token']}"},
        )
        assert quiet.json()["version"] == v and quiet.json()["full"] is False
        for params in ({"since": -1}, {"since": "x"}, {"timeout": 4000}, {"timeout": "nan"}):
            r = c.get("/api/v1/netmap", params=params)
            assert r.status_code == 422, (params, r.text)
            assert "error" in r.json()
    with coord_app.client("not-a-node-token") as c:
        r = c.get("/api/v1/netmap", params={"timeout": 0})
        assert r.status_code == 401 and "error" in r.json()
    with coord_app.client() as c:
        assert c.get("/api/v1/netmap").status_code == 401
        metrics = c.get("/metrics").text
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("pcloud_http_requests_total") and 'route="/api/v1/netmap"' in line
    ]
    assert any('status="200"' in line for line in counted), counted


def test_hostnames_stay_unique_and_are_freed(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    first = register(coord_app, admin, "dup")
    second = register(coord_app, admin, "dup")
    assert first["netmap"]["self"]["hostname"] == "dup"
    assert second["netmap"]["self"]["hostname"] == "dup-2"
    with coord_app.client(admin) as c:
        assert c.delete(f"/api/v1/nodes/{first['node_id']}").status_code == 204
        r = c.patch(f"/api/v1/nodes/{second['node_id']}", json={"hostname": "dup"})
        assert r.status_code == 200 and r.json()["hostname"] == "dup"
    third = register(coord_app, admin, "dup")
    assert third["netmap"]["self"]["hostname"] == "dup-2"


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"public_key": "not-base64!", "hostname": "x"}, "public_key"),
        ({"public_key": base64.b64encode(b"x" * 31).decode() + "=", "hostname": "x"}, "public_key"),
        ({"public_key": "A" * 43 + "=", "hostname": "Bad_Host"}, "hostname"),
        ({"public_key": "A" * 43 + "=", "hostname": "x", "color": "red"}, "unknown field"),
        ({"public_key": "A" * 43 + "=", "hostname": "x", "endpoints": ["nowhere"]}, "endpoint"),
        ({"public_key": "A" * 43 + "=", "hostname": "x", "role": "king"}, "role"),
    ],
)
def test_bad_registration_input(coord_app: CoordApp, body: dict, fragment: str) -> None:
    admin = coord_app.setup_admin()
    with coord_app.client(admin) as c:
        r = c.post("/api/v1/nodes/register", json=body)
        assert r.status_code == 422, r.text
        assert fragment in err(r)["message"]
        assert c.get("/api/v1/nodes").json() == []  # nothing half-written


def test_body_size_limit_and_bad_cidr(
    coord_app: CoordApp, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = coord_app.setup_admin()
    with coord_app.client(admin) as c:
        r = c.put("/api/v1/acl", content="{" + " " * 300_000 + "}")
        assert r.status_code == 413 and err(r)["code"] == "body_too_large"
    # The CLI's refusal, through `pcloud-server`'s entry point in this process (the console
    # script calls the same `main`).
    from pcloud.server.__main__ import main

    assert main(["--state-dir", str(tmp_path / "x"), "--network", "10.0.0.300/24"]) == 2
    assert "not a valid CIDR" in capsys.readouterr().err


def test_private_files_are_0600(coord_app: CoordApp) -> None:
    coord_app.setup_admin()
    for rel in ("pcloud.db", "tls/ca.key", "tls/server.key"):
        assert stat.S_IMODE((coord_app.state_dir / rel).stat().st_mode) == 0o600, rel


def test_metrics_and_docs(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    register(coord_app, admin, "a")
    with coord_app.client() as c:
        text = c.get("/metrics").text
        assert "pcloud_nodes 1.0" in text
        assert "pcloud_long_polls_waiting" in text and "pcloud_http_request_seconds" in text
        assert c.get("/docs").status_code == 200
        assert "/api/v1/nodes/register" in c.get("/openapi.json").json()["paths"]


# ---- expiry, ephemeral nodes, secrets in logs -------------------------------------------------


def test_expired_key_and_token_ephemeral_removal_and_no_secrets_logged(tmp_path: Path) -> None:
    coord = CoordServer(
        tmp_path / "short",
        extra_args=["--ephemeral-timeout", "0.5", "--token-ttl", "3", "--log-level", "debug"],
    ).start()
    try:
        admin = coord.setup_admin()
        short_key = coord.auth_key(admin, user="admin", expires_in_s=1)
        eph_key = coord.auth_key(admin, user="admin", ephemeral=True)
        token = coord.create_user(admin, "alice")
        node = register(coord, eph_key, "ephemeral-pi")
        keeper = register(coord, admin, "keeper")
        with coord.client(node["node_token"]) as c:
            assert c.get("/api/v1/netmap", params={"timeout": 0}).status_code == 200

        def expired_key_refused() -> bool:
            with coord.client(short_key) as c:
                r = c.post(
                    "/api/v1/nodes/register", json={"public_key": pubkey(), "hostname": "late"}
                )
            return r.status_code == 401 and "expired" in err(r)["message"]

        from tests.support.coord import wait_until

        wait_until(expired_key_refused, 10, "the 1 s auth key to expire")

        def ephemeral_gone() -> bool:
            with coord.client(keeper["node_token"]) as c:
                return "ephemeral-pi" not in peers(c.get("/api/v1/netmap").json())

        # Offline after its one poll: removed after the grace period plus the ephemeral timeout.
        wait_until(ephemeral_gone, 15, "the offline ephemeral node to be removed")

        def token_expired() -> bool:
            with coord.client(token) as c:
                r = c.get("/api/v1/auth-keys")
            return r.status_code == 401 and "expired" in err(r)["message"]

        wait_until(token_expired, 10, "alice's 3 s token to expire")
        log = (coord.log_path.read_text() if coord.log_path else "") + (
            coord.state_dir.parent / f"{coord.state_dir.name}.out"
        ).read_text().replace(f"setup code: {coord.setup_code}", "")
        for secret in (admin, short_key, eph_key, token, node["node_token"], "correct horse"):
            assert secret not in log
    finally:
        coord.stop()


async def test_stopping_server_answers_held_long_polls(coord: CoordServer) -> None:
    """A server that stops answers its waiting long polls normally instead of cutting them."""
    admin = coord.setup_admin()
    a = register(coord, admin, "a")
    async with coord.async_client(a["node_token"]) as c:
        v = (await c.get("/api/v1/netmap", params={"timeout": 0})).json()["version"]
        held = asyncio.create_task(c.get("/api/v1/netmap", params={"since": v, "timeout": 30}))
        await asyncio.sleep(0.3)  # let the poll reach the server; the assertions are below
        assert not held.done()
        await asyncio.to_thread(coord.stop)
        answer = await held
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == v and answer.json()["peers_changed"] == []
