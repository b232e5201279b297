"""The cluster routes: first-server registration on the admin socket, the K3s join token only for
server-role nodes, and promotion with a server-role pre-auth key.

Tier: in-process (`coord_app`, tests.support.inproc; its admin socket is the admin app over the
same state, as `pcloud-server` builds it; a restart loads a new app from the same state dir). A
real `pcloud-server` process (`coord`) where a test needs one: the token never in the server's log.
"""

from __future__ import annotations

import base64

import httpx
import nacl.public

from tests.support.coord import ApiHelpers, CoordServer, key_pair
from tests.support.inproc import CoordApp

TOKEN = "K10" + "ab" * 32 + "::server:" + "s3cret" * 5
URL1 = "https://10.0.0.1:6443"


def pubkey() -> str:
    return base64.b64encode(bytes(nacl.public.PrivateKey.generate().public_key)).decode()


def first_server(coord: ApiHelpers, key: str | None = None) -> dict:
    body = {"public_key": key or pubkey(), "hostname": "rpi111", "endpoints": []}
    with coord.admin_client() as c:
        r = c.post("/api/v1/cluster/first-server", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def register(coord: ApiHelpers, secret: str, hostname: str) -> dict:
    """Register as the backend does: with a proof of the node's key (kept as `_private`)."""
    private, public = key_pair()
    body = {"public_key": public, "hostname": hostname, "endpoints": []}
    body["proof"] = coord.proof(private)
    with coord.client(secret) as c:
        r = c.post("/api/v1/nodes/register", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json(), _private=private)


def promote(c: httpx.Client, coord: ApiHelpers, node: dict, key: str) -> httpx.Response:
    proof = coord.proof(node["_private"], "promote")
    return c.post("/api/v1/nodes/self/promote", json={"auth_key": key, "proof": proof})


def test_first_server_only_on_admin_socket_gets_first_address_and_is_stable(
    coord_app: CoordApp,
) -> None:
    with coord_app.client() as c:
        r = c.post(
            "/api/v1/cluster/first-server",
            json={"public_key": pubkey(), "hostname": "evil", "endpoints": []},
        )
    assert r.status_code == 403 and "admin socket" in r.json()["error"]["message"]
    key = pubkey()
    one = first_server(coord_app, key)
    assert one["address"] == "10.0.0.1"
    assert one["netmap"]["self"]["role"] == "server"
    assert one["netmap"]["self"]["tags"] == ["tag:server"]
    # A rerun of the install step: same node, same address, a fresh node token.
    two = first_server(coord_app, key)
    assert (two["node_id"], two["address"]) == (one["node_id"], one["address"])
    assert two["node_token"] != one["node_token"]
    # Works before any user exists: the setup code is still waiting.
    with coord_app.client() as c:
        assert c.get("/api/v1/health").json()["needs_setup"] is True


def test_k3s_token_only_for_server_nodes(coord_app: CoordApp) -> None:
    server = first_server(coord_app)
    admin = coord_app.setup_admin()
    client = register(coord_app, coord_app.auth_key(admin), "laptop")
    with coord_app.client(server["node_token"]) as c:
        assert c.get("/api/v1/cluster/k3s").status_code == 404  # not published yet
        r = c.put("/api/v1/cluster/k3s", json={"token": TOKEN, "server_urls": [URL1]})
        assert r.status_code == 204, r.text
        got = c.get("/api/v1/cluster/k3s")
        assert got.json() == {"token": TOKEN, "server_urls": [URL1]}
    for secret, why in (
        (client["node_token"], "role client"),
        (admin, "node token"),
    ):
        with coord_app.client(secret) as c:
            r = c.get("/api/v1/cluster/k3s")
            assert r.status_code == 403, r.text
            assert why in r.json()["error"]["message"]
            assert TOKEN not in r.text
            put = c.put("/api/v1/cluster/k3s", json={"token": TOKEN, "server_urls": [URL1]})
            assert put.status_code == 403
    with coord_app.client(server["node_token"]) as c:
        other = c.put("/api/v1/cluster/k3s", json={"token": "K10::server:x", "server_urls": [URL1]})
        assert other.status_code == 409
        bad = c.put("/api/v1/cluster/k3s", json={"token": TOKEN, "server_urls": ["http://x"]})
        assert bad.status_code == 422
    # Survives a restart (kept in the store, not only in memory).
    coord_app.restart()
    with coord_app.client(server["node_token"]) as c:
        assert c.get("/api/v1/cluster/k3s").json()["token"] == TOKEN
    # The token is in the store, which only root may read.
    assert (coord_app.state_dir / "pcloud.db").stat().st_mode & 0o077 == 0


def test_promote_with_server_key_and_admin_patch(coord_app: CoordApp) -> None:
    server = first_server(coord_app)
    admin = coord_app.setup_admin()
    a = register(coord_app, coord_app.auth_key(admin), "rpi112")
    b = register(coord_app, coord_app.auth_key(admin), "rpi113")
    with coord_app.client(a["node_token"]) as c:
        client_key = coord_app.auth_key(admin)
        r = promote(c, coord_app, a, client_key)
        assert r.status_code == 403 and "server key" in r.json()["error"]["message"]
        key = coord_app.auth_key(admin, role="server")
        r = promote(c, coord_app, a, key)
        assert r.status_code == 200, r.text
        assert r.json() == {"node_id": a["node_id"], "address": a["address"], "role": "server"}
        # Idempotent for the same node, but the single-use key is spent for anyone else.
        assert promote(c, coord_app, a, key).status_code in (200, 401)
    with coord_app.client(b["node_token"]) as c:
        r = promote(c, coord_app, b, key)
        assert r.status_code == 401 and "already used" in r.json()["error"]["message"]
    # "An admin approves": PATCH the role.
    with coord_app.client(admin) as c:
        r = c.patch(f"/api/v1/nodes/{b['node_id']}", json={"role": "server"})
        assert r.status_code == 200 and r.json()["role"] == "server"
    with coord_app.client(server["node_token"]) as c:
        c.put("/api/v1/cluster/k3s", json={"token": TOKEN, "server_urls": [URL1]})
    with coord_app.client(b["node_token"]) as c:
        assert c.get("/api/v1/cluster/k3s").json()["token"] == TOKEN
        url2 = f"https://{b['address']}:6443"
        assert (
            c.put("/api/v1/cluster/k3s", json={"token": TOKEN, "server_urls": [url2]}).status_code
            == 204
        )
        assert c.get("/api/v1/cluster/k3s").json()["server_urls"] == [URL1, url2]
    # The promoted nodes are servers in the first server's netmap.
    with coord_app.client(server["node_token"]) as c:
        nm = c.get("/api/v1/netmap").json()
    roles = {p["hostname"]: p["role"] for p in nm["peers"]}
    assert roles == {"rpi112": "server", "rpi113": "server"}


def test_token_never_in_server_log(coord: CoordServer) -> None:
    server = first_server(coord)
    with coord.client(server["node_token"]) as c:
        c.put("/api/v1/cluster/k3s", json={"token": TOKEN, "server_urls": [URL1]})
        c.get("/api/v1/cluster/k3s")
    assert coord.log_path is not None
    assert TOKEN not in coord.log_path.read_text()


def test_demote_drops_only_tag_server(coord_app: CoordApp) -> None:
    server = first_server(coord_app)
    admin = coord_app.setup_admin()
    with coord_app.client(admin) as c:
        r = c.patch(f"/api/v1/nodes/{server['node_id']}", json={"tags": ["tag:server", "tag:lab"]})
        assert r.status_code == 200, r.text
    with coord_app.client(server["node_token"]) as c:
        r = c.post("/api/v1/nodes/self/demote", json={})
        assert r.status_code == 200, r.text
        assert r.json() == {
            "node_id": server["node_id"],
            "address": server["address"],
            "role": "client",
        }
        me = c.get("/api/v1/netmap").json()["self"]
        assert (me["role"], me["tags"]) == ("client", ["tag:lab"])
        # Now a client: the server-role routes refuse it.
        assert c.post("/api/v1/nodes/self/demote", json={}).status_code == 403
