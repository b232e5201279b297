"""A hostile netmap against the real backend (security review findings 2 and 3, backend side).

The fixed server no longer accepts hostile endpoints or aliased keys, so the lab test plants
them where an old server or a tampered store would have them: straight into the coordination
server's SQLite store while it is stopped. The real server then serves them, and real backends
with real wireguard-go must configure the good peers, leave out and name each bad one, and keep
polling. A second test drives the real poller against the real server with a netmap handler
that fails, which must not end polling.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import sqlite3
import time
from typing import Any

import nacl.public
import pytest

from tests.lab import Host, Lab, wait_for
from tests.lab.mesh import SERVER_DIR, Mesh, ping
from tests.support.coord import CoordServer

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def fresh_key() -> str:
    return base64.b64encode(bytes(nacl.public.PrivateKey.generate().public_key)).decode()


def other_spelling(key: str) -> str:
    """The same 32 key bytes, spelt differently (the last character's two padding bits)."""
    return key[:42] + B64[B64.index(key[42]) ^ 1] + "="


def wg_peers(host: Host) -> dict[str, str]:
    """public key -> allowed IPs, as wireguard-go has them."""
    out = host.run(["wg", "show", "pcloud0", "allowed-ips"]).stdout
    return {key: ips for key, _, ips in (line.partition("\t") for line in out.splitlines())}


def plant_nodes(db_path: str, template_host: str, nodes: list[dict[str, Any]]) -> None:
    """Write node records beside `template_host`'s, as a tampered or pre-fix store holds them."""
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        records = {
            json.loads(v)["hostname"]: json.loads(v)
            for (v,) in db.execute("SELECT value FROM records WHERE kind = 'node'")
        }
        template = records[template_host]
        next_id = max(int(r["id"]) for r in records.values()) + 1
        db.execute("BEGIN")
        for n, fields in enumerate(nodes, start=next_id):
            rec = {**template, "id": n, "token_digest": secrets.token_hex(32), "observed": None}
            rec.update(fields)
            db.execute(
                "INSERT INTO records (kind, key, value) VALUES ('node', ?, ?)",
                (str(n), json.dumps(rec)),
            )
        db.execute(
            "INSERT OR REPLACE INTO records (kind, key, value) VALUES ('meta', 'next_node_id', ?)",
            (json.dumps({"value": next_id + len(nodes)}),),
        )
        db.execute("COMMIT")
    finally:
        db.close()


def skipped_in_status(mesh: Mesh, host: Host) -> str | None:
    st = mesh.status(host)
    error = st.get("error") or ""
    return error if st["state"] == "Running" and "unsafe netmap peer" in error else None


@pytest.mark.lab
def test_hostile_netmap_peers_are_skipped_and_named_the_rest_still_works(lab: Lab) -> None:
    mesh = Mesh(lab)
    srv = lab.add_host("rpi111")
    mesh.start_server(srv)
    mesh.create_user("alice", "alice-password")
    key = mesh.auth_key("alice", reusable=True)
    a, b = lab.add_host("rpi112"), lab.add_host("rpi113")
    mesh.join_headless(a, key)
    mesh.join_headless(b, key)
    b_ip = mesh.address(b)
    mesh.wait_ping(a, b_ip)
    b_key = mesh.status(b)["self"]["public_key"]
    b_hex = base64.b64decode(b_key).hex()

    # The write-up's attacks, as peers of the same user (so both backends see them).
    inject_key, hijack_key, route_key = fresh_key(), fresh_key(), fresh_key()
    mesh.stop_server()
    plant_nodes(
        str(srv.path(f"{SERVER_DIR}/pcloud.db")),
        "rpi113",
        [
            # A zone id carrying UAPI lines that would remove rpi113 from every peer.
            {"hostname": "evil-inject", "public_key": inject_key, "address": "10.0.0.50",
             "endpoints": [f"[fe80::1%eth0]:51820\npublic_key={b_hex}\nremove=true"]},
            # rpi113's key bytes in another spelling: WireGuard would refuse the whole config.
            {"hostname": "evil-clone", "public_key": other_spelling(b_key),
             "address": "10.0.0.51", "endpoints": ["192.0.2.1:51820"]},
            # rpi113's overlay address: WireGuard would move its traffic to this peer.
            {"hostname": "evil-hijack", "public_key": hijack_key, "address": b_ip,
             "endpoints": ["192.0.2.2:51820"]},
            # An address outside the network: a route into the tunnel for a real host.
            {"hostname": "evil-route", "public_key": route_key, "address": "1.1.1.1",
             "endpoints": ["192.0.2.3:51820"]},
        ],
    )  # fmt: skip
    mesh.start_server()

    error = wait_for(lambda: skipped_in_status(mesh, a), timeout=30, what="rpi112 to name them")
    assert "ignored 4 unsafe netmap peer(s)" in error, error
    for name in ("evil-inject", "evil-clone", "evil-hijack", "evil-route"):
        assert f"({name!r})" in error, error
    assert "not a plain numeric ip:port" in error and "same public key as peer" in error
    assert f"claims address {b_ip}" in error and "not a host address" in error
    peers = wg_peers(a)
    assert peers[b_key] == f"{b_ip}/32"  # rpi113 was neither removed nor robbed of its address
    assert not {inject_key, hijack_key, route_key} & set(peers)
    assert "%" not in a.run(["wg", "show", "pcloud0", "endpoints"]).stdout
    assert ping(a, b_ip)

    # The poller kept running: later netmaps still apply, both removals and new peers.
    mesh.admin("nodes", "delete", str(mesh.node_id("evil-inject")))
    wait_for(
        lambda: "ignored 3 unsafe" in (skipped_in_status(mesh, a) or ""),
        timeout=30,
        what="rpi112 to see evil-inject go",
    )
    laptop = lab.add_host("laptop")
    mesh.join_headless(laptop, key)
    laptop_key = mesh.status(laptop)["self"]["public_key"]
    wait_for(lambda: laptop_key in wg_peers(a), timeout=30, what="the laptop as rpi112's peer")
    mesh.wait_ping(a, mesh.address(laptop))

    # The persisted netmap still holds the hostile peers: a restarted backend must come up.
    mesh.stop_backend(a)
    mesh.start_backend(a)
    mesh.wait_running(a)
    assert "ignored 3 unsafe" in (skipped_in_status(mesh, a) or "")
    mesh.wait_ping(a, b_ip)


async def test_poller_survives_a_netmap_handler_that_fails(
    coord: CoordServer, caplog: pytest.LogCaptureFixture
) -> None:
    from pcloud.backend.control.client import ControlClient
    from pcloud.backend.control.poller import Poller, ServerList
    from pcloud.server.protocol import Netmap

    admin = coord.setup_admin()
    body = {"public_key": fresh_key(), "hostname": "laptop"}
    with coord.client(admin) as c:
        token = c.post("/api/v1/nodes/register", json=body).json()["node_token"]
    got: list[Netmap] = []

    async def on_netmap(nm: Netmap) -> None:
        got.append(nm)
        if len(got) == 1:
            raise RuntimeError("boom: a netmap this backend cannot handle")

    async def on_fatal(err: Any) -> None:
        raise AssertionError(err)

    client = ControlClient(coord.ssl_context())
    poller = Poller(client, ServerList(coord.url), token, since=None, on_netmap=on_netmap,
                    on_fatal=on_fatal, on_reachable=lambda _: None, timeout=5)  # fmt: skip
    task = asyncio.create_task(poller.run())

    async def until(pred: Any, what: str) -> None:
        deadline = time.monotonic() + 20
        while not pred():
            assert not task.done(), f"the poller ended: {task}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)

    caplog.set_level(logging.ERROR, "pcloud.backend.control.poller")
    try:
        # After the failure it asks for a full map again (repairing whatever was half-done)...
        await until(lambda: len(got) >= 2, "the full map after the failure")
        assert got[1].full and "boom" in caplog.text and "asking for a full map" in caplog.text
        # ...and keeps polling: a later change still arrives.
        with coord.client(admin) as c:
            r = c.post("/api/v1/nodes/register", json={"public_key": fresh_key(), "hostname": "pi"})
            assert r.status_code == 200, r.text
        await until(lambda: any(p.hostname == "pi" for nm in got[2:] for p in
                                nm.peers + nm.peers_changed), "the new peer")  # fmt: skip
    finally:
        task.cancel()
        await client.aclose()
