"""Hostile keys and endpoints against the coordination server's API (security review findings 2,
3 and the endpoint/key/name parts of 11): every attack of the write-up is refused with a 4xx
naming the field, and a key's other spellings are the same key.

Tier: in-process (`coord_app`: the app over a real SQLite state dir through httpx's
ASGITransport; tests.support.inproc): nothing here needs TLS or a real process.
"""

from __future__ import annotations

import base64

import httpx
import nacl.public

from pcloud.server.protocol import LOW_ORDER_POINTS
from tests.support.coord import key_pair
from tests.support.inproc import CoordApp

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def new_key() -> bytes:
    return bytes(nacl.public.PrivateKey.generate().public_key)


def spellings(raw: bytes) -> list[str]:
    """The canonical spelling first, then the three others `b64decode` accepts as well."""
    canonical = base64.b64encode(raw).decode()
    base = B64.index(canonical[42]) & ~3
    others = [canonical[:42] + B64[base + i] + "=" for i in range(4)]
    return [canonical] + [s for s in others if s != canonical]


def error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    return str(r.json()["error"]["message"])


def register(c: httpx.Client, key: str, hostname: str, **extra: object) -> httpx.Response:
    return c.post("/api/v1/nodes/register", json={"public_key": key, "hostname": hostname, **extra})


# A zone id may carry anything but '/' and '%' through ipaddress: the write-up's injection.
INJECTION = (
    "[fe80::1%eth0]:51820\npublic_key=" + "ab" * 32 + "\nremove=true\n"
    "public_key=" + "cd" * 32 + "\nendpoint=[::2]:51820"
)
HOSTILE_ENDPOINTS = [
    INJECTION,
    "[fe80::1%eth0]:51820",
    "[fe80::1%a b c]:51820",
    "0.0.0.0:1",
    "255.255.255.255:1",
    "224.0.0.1:1",
    "127.0.0.1:22",
    "[::1]:22",
    "169.254.0.1:5",
    "1.2.3.4:0051820",
    "[1.2.3.4]:5",
    "[[::1]]:5",
    "1.2.3.4:\uff11\uff12",
    "[2001:DB8::1]:5",
]


def test_endpoint_injection_is_refused_naming_the_field(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    alice = coord_app.create_user(admin, "alice")
    private, public = key_pair()
    proof = coord_app.proof(private)  # a server-role node proves its key (security review 1)
    with coord_app.client(admin) as c:
        srv = register(c, public, "srv1", role="server", proof=proof).json()
    with coord_app.client(alice) as c:
        a1 = register(
            c, base64.b64encode(new_key()).decode(), "a1", endpoints=["192.0.2.1:51820"]
        ).json()
        for bad in HOSTILE_ENDPOINTS:
            msg = error(
                register(c, base64.b64encode(new_key()).decode(), "x", endpoints=[bad]), 422
            )
            assert msg.startswith("endpoints.0: "), msg
    with coord_app.client(a1["node_token"]) as c:
        for bad in HOSTILE_ENDPOINTS:
            msg = error(c.put("/api/v1/nodes/self/endpoints", json={"endpoints": [bad]}), 422)
            assert msg.startswith("endpoints.0: ") and "endpoint" in msg[14:], msg
        msg = error(c.put("/api/v1/nodes/self/endpoints", json={"endpoints": [INJECTION]}), 422)
        assert "printable ASCII" in msg
        zone = error(
            c.put("/api/v1/nodes/self/endpoints", json={"endpoints": ["[fe80::1%eth0]:51820"]}), 422
        )
        assert "zone" in zone
        noncanonical = error(
            c.put("/api/v1/nodes/self/endpoints", json={"endpoints": ["[2001:DB8:0::1]:5"]}), 422
        )
        assert "send '[2001:db8::1]:5'" in noncanonical
        twice = error(
            c.put(
                "/api/v1/nodes/self/endpoints", json={"endpoints": ["192.0.2.9:5", "192.0.2.9:5"]}
            ),
            422,
        )
        assert "listed twice" in twice
        ok = c.put(
            "/api/v1/nodes/self/endpoints",
            json={"endpoints": ["198.51.100.7:41641", "[2001:db8::7]:41641"]},
        )
        assert ok.status_code == 204, ok.text
    # The server's own peers only ever see the accepted, canonical endpoints.
    with coord_app.client(srv["node_token"]) as c:
        seen = {p["hostname"]: p["endpoints"] for p in c.get("/api/v1/netmap").json()["peers"]}
    assert seen["a1"] == ["198.51.100.7:41641", "[2001:db8::7]:41641"]


def check_low_order_keys_refused(coord_app: CoordApp, admin: str, alice: str) -> None:
    """Register and rotate-key, the two places a key is taken, refuse every low-order point."""
    # Each point also with bit 255 set, which X25519 ignores.
    points = [p[:31] + bytes([p[31] | top]) for p in sorted(LOW_ORDER_POINTS) for top in (0, 128)]
    bad = [base64.b64encode(p).decode() for p in points]
    assert "A" * 43 + "=" in bad  # the all-zero key of the write-up
    with coord_app.client(alice) as c:
        for key in bad:
            msg = error(register(c, key, "zero"), 422)
            assert msg.startswith("public_key: ") and "Curve25519" in msg, msg
        a9 = register(c, base64.b64encode(new_key()).decode(), "a9").json()
    with coord_app.client(a9["node_token"]) as c:
        for key in bad:
            msg = error(c.post("/api/v1/nodes/self/rotate-key", json={"public_key": key}), 422)
            assert msg.startswith("public_key: "), msg
    with coord_app.client(admin) as c:
        assert "zero" not in [n["hostname"] for n in c.get("/api/v1/nodes").json()]


def test_the_four_spellings_of_a_key_are_one_key_and_low_order_keys_are_none(
    coord_app: CoordApp,
) -> None:
    admin = coord_app.setup_admin()
    alice = coord_app.create_user(admin, "alice")
    bob = coord_app.create_user(admin, "bob")
    raw = new_key()
    forms = spellings(raw)
    assert len(set(forms)) == 4 and {base64.b64decode(f) for f in forms} == {raw}
    with coord_app.client(bob) as c:
        b1 = register(c, forms[2], "b1").json()  # registered in an odd spelling
        assert b1["netmap"]["self"]["public_key"] == forms[0]  # stored canonical
        again = register(c, forms[3], "b1").json()  # the owner's re-login: the same node
        assert (again["node_id"], again["address"]) == (b1["node_id"], b1["address"])
    with coord_app.client(alice) as c:
        for form in forms:
            r = register(c, form, "bobclone")
            assert r.status_code == 409 and r.json()["error"]["code"] == "public_key_taken", r.text
        a1 = register(c, base64.b64encode(new_key()).decode(), "a1").json()
    with coord_app.client(a1["node_token"]) as c:
        for form in forms:
            r = c.post("/api/v1/nodes/self/rotate-key", json={"public_key": form})
            assert r.status_code == 409 and "another node" in r.json()["error"]["message"], r.text
        own = c.get("/api/v1/netmap").json()["self"]["public_key"]
        fresh = spellings(new_key())
        r = c.post("/api/v1/nodes/self/rotate-key", json={"public_key": fresh[1]})
        assert r.status_code == 200, r.text
        after = c.get("/api/v1/netmap").json()["self"]["public_key"]
        assert after == fresh[0] != own
    with coord_app.client(admin) as c:
        keys = [n["public_key"] for n in c.get("/api/v1/nodes").json()]
    assert keys.count(forms[0]) == 1 and not set(forms[1:]) & set(keys)
    check_low_order_keys_refused(coord_app, admin, alice)


def test_names_with_a_trailing_newline_are_refused(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    with coord_app.client(admin) as c:
        msg = error(register(c, base64.b64encode(new_key()).decode(), "srv1\n"), 422)
        assert msg.startswith("hostname: ")
        node = register(c, base64.b64encode(new_key()).decode(), "srv1").json()
        msg = error(c.patch(f"/api/v1/nodes/{node['node_id']}", json={"hostname": "srv1\n"}), 422)
        assert msg.startswith("hostname: ")
        msg = error(c.post("/api/v1/auth-keys", json={"tags": ["tag:server\n"]}), 422)
        assert msg.startswith("tags.0: ")
        body = {"username": "bob\n", "password": "password123"}
        assert error(c.post("/api/v1/users", json=body), 422).startswith("username: ")
