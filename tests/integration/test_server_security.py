"""The attacks of the security review (shared/reviews/security-review.md, findings 1, 6, 7, 8, 11,
12) against the coordination server, each asserting the safe outcome.

Tier: in-process (`coord_app`: the app over a real SQLite state dir through httpx's
ASGITransport; tests.support.inproc) where the attack is on the API alone. A real
`pcloud-server` subprocess over HTTPS on loopback (`CoordServer`) where it needs one: login
budgets per source address and a trusted proxy (the transport has one fixed client address),
stdout under systemd.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.coord import BIN, ApiHelpers, CoordServer, key_pair, wait_until
from tests.support.inproc import CoordApp, start_app
from tests.support.ports import free_port

K3S = {"token": "K10-SECRET-K3S-TOKEN::server:abc", "server_urls": ["https://10.0.0.1:6443"]}


def err(r: httpx.Response) -> dict:
    return dict(r.json()["error"])


def register(
    coord: ApiHelpers, secret: str, hostname: str, private: str | None = None, **extra: object
) -> httpx.Response:
    body: dict[str, object] = {"hostname": hostname, "endpoints": ["192.0.2.1:51820"]}
    if private is not None:
        body["proof"] = coord.proof(private)
    body.update(extra)
    with coord.client(secret) as c:
        return c.post("/api/v1/nodes/register", json=body)


# ---- finding 1: node takeover ----------------------------------------------------------------


def test_promoted_server_cannot_be_taken_over_by_its_former_owner(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    alice = coord_app.create_user(admin, "alice")
    alice_key = coord_app.auth_key(admin, user="alice", reusable=True)
    # srv1 publishes the K3s token.
    s_priv, s_pub = key_pair()
    srv1 = register(coord_app, admin, "srv1", s_priv, public_key=s_pub, role="server").json()
    with coord_app.client(srv1["node_token"]) as c:
        assert c.put("/api/v1/cluster/k3s", json=K3S).status_code == 204
    # alice's device a2 joins (the real backend proves its key) and an admin approves it.
    a_priv, a_pub = key_pair()
    a2 = register(coord_app, alice, "a2", a_priv, public_key=a_pub).json()
    with coord_app.client(admin) as c:
        r = c.patch(f"/api/v1/nodes/{a2['node_id']}", json={"role": "server"})
    assert r.status_code == 200
    # Owned by tag:server now, like the first server: alice's credentials no longer reach it.
    assert (r.json()["user"], r.json()["tags"]) == ("tagged-devices", ["tag:server"])
    # The attack: alice re-registers a2's public key (from any netmap) with her token or key.
    for secret in (alice, alice_key):
        r = register(coord_app, secret, "a2", public_key=a_pub, endpoints=["203.0.113.66:51820"])
        assert r.status_code == 409, r.text
        assert err(r)["code"] == "public_key_taken"
    # A proof made with another key does not pass for a2's, even with an admin's credential.
    other_priv, _ = key_pair()
    r = register(coord_app, admin, "a2", other_priv, public_key=a_pub, role="server")
    assert r.status_code == 401 and err(r)["code"] == "invalid_proof"
    # ...nor does the admin's credential without a proof.
    r = register(coord_app, admin, "a2", public_key=a_pub, role="server")
    assert r.status_code == 403 and err(r)["code"] == "proof_required"
    # The real device still holds its (proven) token and gets the secrets; nobody else did.
    with coord_app.client(a2["node_token"]) as c:
        assert c.get("/api/v1/netmap", params={"timeout": 0}).status_code == 200
        assert c.get("/api/v1/cluster/k3s").json()["token"] == K3S["token"]
    # The name of the servers' owner is no account anyone may create.
    with coord_app.client(admin) as c:
        r = c.post("/api/v1/users", json={"username": "pcloud", "password": "password123"})
    assert r.status_code == 422 and "reserved" in err(r)["message"]


def test_a_token_taken_before_promotion_gets_no_secret(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    alice = coord_app.create_user(admin, "alice")
    a_priv, a_pub = key_pair()
    register(coord_app, alice, "a2", a_priv, public_key=a_pub)
    # alice logs the client a2 in again without its key (allowed for a client, DESIGN 2) ...
    stolen = register(coord_app, alice, "a2", public_key=a_pub).json()
    with coord_app.client(admin) as c:
        assert c.patch(f"/api/v1/nodes/{stolen['node_id']}", json={"role": "server"}).is_success
    # ... but that token was not issued against a proof: no server secret, no renewal.
    with coord_app.client(stolen["node_token"]) as c:
        for path in ("/api/v1/cluster/ca", "/api/v1/cluster/k3s"):
            r = c.get(path)
            assert r.status_code == 403 and err(r)["code"] == "proof_required", path
        wrong_priv, _ = key_pair()
        r = c.post("/api/v1/nodes/self/token", json={"proof": coord_app.proof(wrong_priv, "renew")})
        assert r.status_code == 401 and err(r)["code"] == "invalid_proof"
        # The device itself renews with its key and is served.
        assert c.post(
            "/api/v1/nodes/self/token", json={"proof": coord_app.proof(a_priv, "renew")}
        ).is_success
        assert "BEGIN PRIVATE KEY" in c.get("/api/v1/cluster/ca").json()["ca_key"]


def test_proofs_are_bound_to_purpose_and_single_use(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    priv, pub = key_pair()
    proof = coord_app.proof(priv, "register")
    ok = register(coord_app, admin, "srv", None, public_key=pub, role="server", proof=proof)
    assert ok.status_code == 200, ok.text
    replay = register(coord_app, admin, "srv", None, public_key=pub, role="server", proof=proof)
    assert replay.status_code == 401 and "already used" in err(replay)["message"]
    token = ok.json()["node_token"]
    new_priv, new_pub = key_pair()
    with coord_app.client(token) as c:
        # A server's key rotation proves the NEW key, for the purpose "rotate".
        r = c.post("/api/v1/nodes/self/rotate-key", json={"public_key": new_pub})
        assert r.status_code == 403 and err(r)["code"] == "proof_required"
        wrong = coord_app.proof(new_priv, "register")
        r = c.post("/api/v1/nodes/self/rotate-key", json={"public_key": new_pub, "proof": wrong})
        assert r.status_code == 401 and "'rotate'" in err(r)["message"]
        right = coord_app.proof(new_priv, "rotate")
        r = c.post("/api/v1/nodes/self/rotate-key", json={"public_key": new_pub, "proof": right})
        assert r.status_code == 200, r.text


def test_every_server_role_node_is_owned_by_tag_server(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    alice = coord_app.create_user(admin, "alice")
    server_key = coord_app.auth_key(admin, role="server")
    priv, pub = key_pair()
    joined = register(coord_app, server_key, "srv2", priv, public_key=pub).json()["netmap"]["self"]
    assert (joined["user"], joined["tags"]) == ("tagged-devices", ["tag:server"])
    # Promotion with a server key (join-server) needs the proof and moves ownership too.
    a_priv, a_pub = key_pair()
    a3 = register(coord_app, alice, "a3", a_priv, public_key=a_pub).json()
    promote_key = coord_app.auth_key(admin, role="server")
    with coord_app.client(a3["node_token"]) as c:
        r = c.post("/api/v1/nodes/self/promote", json={"auth_key": promote_key})
        assert r.status_code == 403 and err(r)["code"] == "proof_required"
        proof = coord_app.proof(a_priv, "promote")
        r = c.post("/api/v1/nodes/self/promote", json={"auth_key": promote_key, "proof": proof})
        assert r.status_code == 200, r.text
        me = c.get("/api/v1/netmap", params={"timeout": 0}).json()["self"]
    assert (me["role"], me["user"], me["tags"]) == ("server", "tagged-devices", ["tag:server"])


# ---- finding 6: address exhaustion by one user -----------------------------------------------


def test_device_quota_per_user(tmp_path: Path) -> None:
    coord_app = start_app(tmp_path / "q", max_devices_per_user=3)
    try:
        admin = coord_app.setup_admin()
        alice = coord_app.create_user(admin, "alice")
        alice_key = coord_app.auth_key(alice, reusable=True)
        for i in range(3):
            assert register(coord_app, alice_key, f"spam{i}", public_key=key_pair()[1]).is_success
        r = register(coord_app, alice_key, "spam3", public_key=key_pair()[1])
        assert r.status_code == 403 and err(r)["code"] == "device_quota"
        assert "--max-devices-per-user" in err(r)["message"]
        # Others (and admins, who are exempt) still register.
        bob = coord_app.create_user(admin, "bob")
        assert register(coord_app, bob, "b1", public_key=key_pair()[1]).is_success
        for i in range(4):
            assert register(coord_app, admin, f"adm{i}", public_key=key_pair()[1]).is_success
    finally:
        coord_app.stop()


# ---- finding 7: login limiting ---------------------------------------------------------------


def _login(coord: CoordServer, user: str, password: str, source: str = "127.0.0.1", **hdr: str):
    transport = httpx.HTTPTransport(local_address=source, verify=coord.ssl_context())
    with httpx.Client(base_url=coord.url, transport=transport, timeout=30) as c:
        return c.post("/api/v1/login", json={"username": user, "password": password}, headers=hdr)


def test_login_budgets_per_source_per_user_and_no_forwarded_header(tmp_path: Path) -> None:
    budgets = ["--login-failures-per-user", "8", "--login-failures-per-source", "10"]
    coord = CoordServer(tmp_path / "login", extra_args=budgets).start()
    try:
        _login_attacks(coord)
    finally:
        coord.stop()


def _login_attacks(coord: CoordServer) -> None:
    admin = coord.setup_admin()
    coord.create_user(admin, "alice")
    # A rotating X-Forwarded-For from the attacker is not believed (no trusted proxy).
    codes = [
        _login(coord, "alice", "wrong", **{"X-Forwarded-For": f"198.51.100.{i}"}).status_code
        for i in range(6)
    ]
    assert codes == [401] * 5 + [429]
    # Spraying one password over many usernames from one address runs out (per source).
    sprayed = [_login(coord, f"user{i}", "Winter2026!", "127.0.0.2").status_code for i in range(11)]
    assert sprayed == [401] * 10 + [429]
    # Guessing one username from many addresses runs out too (per username).
    guessed = [_login(coord, "admin", "nope", f"127.0.1.{i}").status_code for i in range(1, 10)]
    assert guessed == [401] * 8 + [429]
    r = _login(coord, "admin", "nope", "127.0.2.1")
    assert r.status_code == 429 and "this username" in err(r)["message"]
    assert int(r.headers["Retry-After"]) >= 1


def test_password_hashing_is_bounded(coord_app: CoordApp) -> None:
    coord_app.setup_admin()

    async def flood() -> list[httpx.Response]:
        async with coord_app.async_client() as c:
            return await asyncio.gather(
                *(
                    c.post("/api/v1/login", json={"username": f"u{i}", "password": "x"})
                    for i in range(40)
                )
            )

    answers = asyncio.run(flood())
    codes = [r.status_code for r in answers]
    busy = [r for r in answers if r.status_code == 503]
    assert set(codes) <= {401, 503, 429} and busy, codes
    assert all(err(r)["code"] == "busy" and r.headers["Retry-After"] for r in busy)


# ---- finding 8: policy work off the event loop -----------------------------------------------


def test_policy_limits_and_health_during_a_heavy_check(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    with coord_app.client(admin) as c:
        deep = '{"groups": {"group:a": ' + "[" * 500 + "]" * 500 + "}}"
        r = c.post("/api/v1/acl/check", content=deep)
        assert r.status_code == 422 and "nests deeper" in err(r)["message"]
        many = {"acls": [{"action": "accept", "src": ["*"], "dst": ["*:1-65535"]}] * 5040}
        r = c.post("/api/v1/acl/check", json=many)
        assert r.status_code == 422 and "5040 acls" in err(r)["message"]
    for i in range(60):
        assert register(coord_app, admin, f"n{i}", public_key=key_pair()[1]).is_success
    heavy = {
        "acls": [
            {
                "action": "accept",
                "src": [f"10.{i % 250}.{j}.0/24" for j in range(10)],
                "dst": ["*:*"],
            }
            for i in range(1000)
        ]
    }

    async def check_while_probing() -> tuple[int, float]:
        async with coord_app.async_client(admin) as c, coord_app.async_client() as probe:
            task = asyncio.create_task(c.post("/api/v1/acl/check", json=heavy))
            worst = 0.0
            while not task.done():
                t0 = time.monotonic()
                assert (await probe.get("/api/v1/health")).status_code == 200
                worst = max(worst, time.monotonic() - t0)
                await asyncio.sleep(0.05)  # probe pacing, not synchronisation
            return (await task).status_code, worst

    status, worst = asyncio.run(check_while_probing())
    assert status in (200, 422)
    assert worst < 1.0, f"/health took {worst:.2f} s during the policy check"


# ---- findings 11-12: names, token lifetimes, logout, setup code, metadata ---------------------


def test_trailing_newline_names_are_refused(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    with coord_app.client(admin) as c:
        r = c.post("/api/v1/users", json={"username": "bob\n", "password": "password123"})
        assert r.status_code == 422
        r = c.post("/api/v1/auth-keys", json={"tags": ["tag:server\n"]})
        assert r.status_code == 422
    r = register(coord_app, admin, "srv1\n", public_key=key_pair()[1])
    assert r.status_code == 422 and "hostname" in err(r)["message"]


def test_node_token_expires_and_renews_with_a_proof(tmp_path: Path) -> None:
    coord_app = start_app(tmp_path / "ttl", node_token_ttl_s=2)
    try:
        admin = coord_app.setup_admin()
        priv, pub = key_pair()
        node = register(coord_app, admin, "n1", priv, public_key=pub).json()
        assert node["node_token_ttl_s"] == 2
        with coord_app.client(node["node_token"]) as c:

            def expired() -> bool:
                r = c.get("/api/v1/netmap", params={"timeout": 0})
                return r.status_code == 401 and err(r)["code"] == "node_token_expired"

            wait_until(expired, 10, "the node token to expire")
            r = c.post("/api/v1/nodes/self/token", json={"proof": coord_app.proof(priv, "renew")})
            assert r.status_code == 200 and r.json()["ttl_s"] == 2
            assert c.get("/api/v1/netmap", params={"timeout": 0}).status_code == 200
    finally:
        coord_app.stop()


def test_user_logout_revokes_the_token(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    with coord_app.client(admin) as c:
        assert c.get("/api/v1/users").status_code == 200
        assert c.delete("/api/v1/sessions/self").status_code == 204
        r = c.get("/api/v1/users")
        assert r.status_code == 401


def test_metrics_and_docs_are_settings(tmp_path: Path) -> None:
    from pcloud.server.arguments import load_settings, server_parser
    from pcloud.server.config import Listen, Settings

    lan = Settings(state_dir=tmp_path, listen=(Listen("0.0.0.0", 8443),))
    assert not lan.metrics_open and not lan.docs_open
    # The flags as `pcloud-server` parses them, then the app built from those settings.
    flags = ["--listen", "127.0.0.1:8443", "--expose-metrics", "no", "--expose-docs", "no"]
    closed = load_settings(server_parser().parse_args(["--state-dir", str(tmp_path / "c"), *flags]))
    coord_app = CoordApp(closed.state_dir, closed).start()
    try:
        with coord_app.client() as c:
            for path in ("/metrics", "/docs", "/openapi.json"):
                assert c.get(path).status_code == 404, path
            assert c.get("/api/v1/health").status_code == 200
    finally:
        coord_app.stop()


def test_setup_code_stays_off_the_journal(tmp_path: Path) -> None:
    state = tmp_path / "sd"
    port = free_port()
    out = tmp_path / "sd.out"
    env = dict(os.environ, INVOCATION_ID="0123456789abcdef")
    with open(out, "w") as stdout:
        proc = subprocess.Popen(
            [
                str(BIN / "pcloud-server"),
                "--state-dir",
                str(state),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            stdout=stdout,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:
        wait_until(lambda: "setup code" in out.read_text(), 20, "the server's start lines")
        code = (state / "setup-code").read_text().strip()
        assert re.search(r"setup code: in \S+setup-code", out.read_text())
        assert code not in out.read_text()
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("name", ["srv1\n", "srv1\n-2"])
def test_hostname_patch_with_newline_refused(coord_app: CoordApp, name: str) -> None:
    admin = coord_app.setup_admin()
    node = register(coord_app, admin, "srv1", public_key=key_pair()[1]).json()
    with coord_app.client(admin) as c:
        r = c.patch(f"/api/v1/nodes/{node['node_id']}", json={"hostname": name})
    assert r.status_code == 422


def test_expired_user_tokens_are_purged(tmp_path: Path) -> None:
    import sqlite3

    coord_app = start_app(tmp_path / "purge", token_ttl_s=1)
    try:
        admin = coord_app.setup_admin()

        def tokens() -> int:
            with sqlite3.connect(coord_app.state_dir / "pcloud.db") as db:
                row = db.execute("SELECT count(*) FROM records WHERE kind = 'token'").fetchone()
                return int(row[0])

        assert tokens() == 1
        with coord_app.client(admin) as c:
            wait_until(lambda: c.get("/api/v1/users").status_code == 401, 5, "token expiry")
        coord_app.restart()  # the purge runs at start, then hourly
        wait_until(lambda: tokens() == 0, 10, "the expired token to be purged")
    finally:
        coord_app.stop()


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    coord = CoordServer(tmp_path / "proxy", extra_args=["--trusted-proxy", "127.0.0.3"]).start()
    try:
        admin = coord.setup_admin()
        coord.create_user(admin, "alice")
        # Behind the proxy, each forwarded client has its own (username, address) budget ...
        for i in range(7):
            hop = {"X-Forwarded-For": f"198.51.100.{i}"}
            assert _login(coord, "alice", "wrong", "127.0.0.3", **hop).status_code == 401
        # ... while from anywhere else the header changes nothing.
        codes = [
            _login(coord, "alice", "wrong", "127.0.0.4", **{"X-Forwarded-For": f"203.0.113.{i}"})
            for i in range(6)
        ]
        assert [r.status_code for r in codes] == [401] * 5 + [429]
    finally:
        coord.stop()
