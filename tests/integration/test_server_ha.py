"""Two real pcloud-server processes on one 3-member etcd (loopback): cross-server long polls,
racing registrations, policy, the server list, quorum loss (503 naming quorum within 2 s, reads keep
working, the admin CLI says what to do), restart, the store's endpoints following the etcd members, and
a server-list-only change reaching a real backend's saved netmap."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pcloud.backend.config import BackendSettings
from pcloud.backend.ha.coord import server_urls
from pcloud.backend.local import LocalBackend
from pcloud.backend.localapi.schemas import LoginRequest
from pcloud.backend.wg.fake import FakeDriver
from pcloud.shared.etcd.cluster import ClusterAdmin
from tests.support.coord import CoordServer, etcd_args, key_pair, share_ca, wait_until
from tests.support.etcd import Cluster, cluster, needs_etcd

pytestmark = needs_etcd


@dataclass
class Ha:
    etcd: Cluster
    a: CoordServer
    b: CoordServer
    admin: str


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[Ha]:
    with cluster(tmp_path / "etcd", 3) as etcd:
        t = etcd.client_tls
        servers: list[CoordServer] = []
        try:
            a = CoordServer(
                tmp_path / "a", extra_args=etcd_args(etcd.endpoints(), t.ca, t.cert, t.key, "srv-a")
            )
            servers.append(a.start())
            admin = a.setup_admin()
            b = CoordServer(
                tmp_path / "b", extra_args=etcd_args(etcd.endpoints(), t.ca, t.cert, t.key, "srv-b")
            )
            share_ca(a.state_dir, b.state_dir)
            servers.append(b.start())
            yield Ha(etcd, a, b, admin)
        finally:
            for s in servers:
                s.stop()


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def register(
    coord: CoordServer, token: str, hostname: str, *, prove: bool = False
) -> dict[str, Any]:
    body = {"public_key": new_key(), "hostname": hostname, "endpoints": ["192.0.2.1:51820"]}
    if prove:  # as the backend does: a token that may later hold server secrets
        private, body["public_key"] = key_pair()
        body["proof"] = coord.proof(private)
    with coord.client(token) as c:
        r = c.post("/api/v1/nodes/register", json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())


def waiting_polls(coord: CoordServer) -> int:
    with coord.client() as c:
        for line in c.get("/metrics").text.splitlines():
            if line.startswith("pcloud_long_polls_waiting "):
                return int(float(line.split()[1]))
    return 0


def node_names(coord: CoordServer, admin: str) -> set[str]:
    with coord.client(admin) as c:
        return {n["hostname"] for n in c.get("/api/v1/nodes").json()}


async def test_change_on_a_wakes_poll_on_b_and_servers_list_both(ha: Ha) -> None:
    with ha.b.client() as c:
        assert c.get("/api/v1/health").json()["store"] == "etcd"
    n1 = register(ha.a, ha.admin, "n1")
    # The token and node came to B through the watch.
    wait_until(lambda: "n1" in node_names(ha.b, ha.admin), 5, "B to know n1")
    with ha.b.client(n1["node_token"]) as c:
        first = c.get("/api/v1/netmap").json()
    assert set(first["servers"]) == {ha.a.url, ha.b.url}
    assert first["servers"][0] == ha.b.url  # the answering server first
    assert set(n1["netmap"]["servers"]) == {ha.a.url, ha.b.url}
    async with ha.b.async_client(n1["node_token"]) as cb:
        poll = asyncio.create_task(
            cb.get("/api/v1/netmap", params={"since": first["version"], "timeout": 20})
        )
        await asyncio.to_thread(wait_until, lambda: waiting_polls(ha.b) >= 1, 10, "poll on B")
        started = time.monotonic()
        await asyncio.to_thread(register, ha.a, ha.admin, "n2")
        acked = time.monotonic()
        answer = (await poll).json()
        woke = time.monotonic()
    print(
        f"\ncross-server wake: {1000 * (woke - acked):.1f} ms after A acknowledged, "
        f"{1000 * (woke - started):.1f} ms after the registration started"
    )
    assert answer["full"] is False
    assert [p["hostname"] for p in answer["peers_changed"]] == ["n2"]
    assert woke - acked < 1.0


async def test_racing_registrations_on_both_servers_get_unique_addresses(ha: Ha) -> None:
    key = ha.a.auth_key(ha.admin, reusable=True, expires_in_s=600)
    per_server = 30

    async def burst(coord: CoordServer, tag: str) -> list[dict[str, Any]]:
        async with coord.async_client(key) as c:

            async def one(i: int) -> dict[str, Any]:
                body = {"public_key": new_key(), "hostname": f"{tag}{i}", "endpoints": []}
                r = await c.post("/api/v1/nodes/register", json=body)
                assert r.status_code == 200, r.text
                return dict(r.json())

            return list(await asyncio.gather(*(one(i) for i in range(per_server))))

    # The key must have reached B before B can accept it.
    wait_until(lambda: register(ha.b, key, "probe"), 5, "B to accept the auth key")
    started = time.monotonic()
    got_a, got_b = await asyncio.gather(burst(ha.a, "a"), burst(ha.b, "b"))
    print(f"\n{2 * per_server} racing registrations took {time.monotonic() - started:.2f} s")
    answers = got_a + got_b
    addresses = [r["address"] for r in answers]
    assert len(set(addresses)) == 2 * per_server
    assert len({r["node_id"] for r in answers}) == 2 * per_server
    want = {f"a{i}" for i in range(per_server)} | {f"b{i}" for i in range(per_server)} | {"probe"}
    for coord in (ha.a, ha.b):
        wait_until(lambda c=coord: node_names(c, ha.admin) == want, 5, f"{coord.url} sees all")
        with coord.client(ha.admin) as c:
            listed = {n["hostname"]: n["address"] for n in c.get("/api/v1/nodes").json()}
        assert all(listed[r["netmap"]["self"]["hostname"]] == r["address"] for r in answers)


async def test_policy_written_on_a_changes_netmaps_served_by_b(ha: Ha) -> None:
    n1 = register(ha.a, ha.admin, "n1")
    register(ha.a, ha.admin, "n2")
    wait_until(lambda: {"n1", "n2"} <= node_names(ha.b, ha.admin), 5, "B to know both")
    with ha.b.client(n1["node_token"]) as c:
        first = c.get("/api/v1/netmap").json()
    assert [p["hostname"] for p in first["peers"]] == ["n2"]
    async with ha.b.async_client(n1["node_token"]) as cb:
        poll = asyncio.create_task(
            cb.get("/api/v1/netmap", params={"since": first["version"], "timeout": 20})
        )
        await asyncio.to_thread(wait_until, lambda: waiting_polls(ha.b) >= 1, 10, "poll on B")
        with ha.a.client(ha.admin) as c:
            r = c.put(
                "/api/v1/acl", content='{"acls": []}', headers={"content-type": "application/json"}
            )
            assert r.status_code == 200, r.text
        answer = (await poll).json()
    assert answer["peers_removed"] == [first["peers"][0]["node_id"]]
    with ha.b.client(ha.admin) as c:
        assert c.get("/api/v1/acl").json()["policy"] == '{"acls": []}'


def test_quorum_loss_refuses_writes_keeps_reads_then_recovers(ha: Ha) -> None:
    n1 = register(ha.a, ha.admin, "n1")
    register(ha.b, ha.admin, "n2")
    wait_until(lambda: {"n1", "n2"} <= node_names(ha.a, ha.admin), 5, "A to know both")
    with ha.a.client(ha.admin) as c:
        acked = {
            c.post("/api/v1/auth-keys", json={"expires_in_s": 600}).json()["prefix"]
            for _ in range(3)
        }
    members = list(ha.etcd.members.values())
    for m in members[:2]:
        m.stop(timeout=5)
    try:
        for coord in (ha.a, ha.b):
            with coord.client(ha.admin) as c:
                started = time.monotonic()
                r = c.post("/api/v1/auth-keys", json={"expires_in_s": 600})
                took = time.monotonic() - started
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "store_unavailable"
            assert "quorum" in r.json()["error"]["message"]
            print(f"\n{coord.url}: write refused with 503 after {took:.2f} s")
            assert took < 2.0  # not etcd's 7 s, nor the busy-retry loop's 5 s
            # Reads are served from memory: the netmap and the node list still answer.
            with coord.client(n1["node_token"]) as c:
                nm = c.get("/api/v1/netmap", params={"timeout": 0})
            assert nm.status_code == 200 and [p["hostname"] for p in nm.json()["peers"]] == ["n2"]
        # The admin CLI says what happened and what to do, without a traceback.
        cli = ha.a.admin("auth-keys", "create", "--user", "admin", check=False)
        assert cli.returncode == 1, cli.stdout
        assert "quorum is lost" in cli.stderr and "Traceback" not in cli.stderr, cli.stderr
        assert "pcloud ha force-new-cluster --yes-i-lost-the-other-servers" in cli.stderr
    finally:
        for m in members[:2]:
            m.start()
        for m in members:
            m.wait_healthy(30)

    def write_works() -> str | None:
        with ha.b.client(ha.admin) as c:
            r = c.post("/api/v1/auth-keys", json={"expires_in_s": 600})
            return str(r.json()["prefix"]) if r.status_code == 201 else None

    acked.add(wait_until(write_works, 20, "writes to work again after quorum is back"))
    n3 = register(ha.a, ha.admin, "n3")
    wait_until(lambda: "n3" in node_names(ha.b, ha.admin), 5, "B to see n3")
    for coord in (ha.a, ha.b):
        with coord.client(ha.admin) as c:
            prefixes = {k["prefix"] for k in c.get("/api/v1/auth-keys").json()}
        # Every acknowledged write is there; a refused one may or may not have landed later.
        assert acked <= prefixes and len(prefixes) <= len(acked) + 2
        assert {"n1", "n2", "n3"} <= node_names(coord, ha.admin)
    assert n3["address"] not in {n1["address"]}


async def test_restarted_server_resyncs(ha: Ha) -> None:
    n1 = register(ha.a, ha.admin, "n1")
    with ha.a.client(n1["node_token"]) as c:
        before = c.get("/api/v1/netmap").json()
    ha.a.stop()
    register(ha.b, ha.admin, "n2")  # made while A is down
    ha.a.start()
    assert {"n1", "n2"} <= node_names(ha.a, ha.admin)
    with ha.a.client(n1["node_token"]) as c:
        # A version from A's previous process is one it cannot vouch for: a full map.
        again = c.get("/api/v1/netmap", params={"since": before["version"], "timeout": 0}).json()
    assert again["full"] is True and [p["hostname"] for p in again["peers"]] == ["n2"]
    assert again["version"] > before["version"]
    async with ha.a.async_client(n1["node_token"]) as ca:
        poll = asyncio.create_task(
            ca.get("/api/v1/netmap", params={"since": again["version"], "timeout": 20})
        )
        await asyncio.to_thread(wait_until, lambda: waiting_polls(ha.a) >= 1, 10, "poll on A")
        await asyncio.to_thread(register, ha.b, ha.admin, "n3")
        answer = (await poll).json()
    assert [p["hostname"] for p in answer["peers_changed"]] == ["n3"]


def test_failover_client_gets_full_map_from_other_server(ha: Ha) -> None:
    n1 = register(ha.a, ha.admin, "n1")
    wait_until(lambda: "n1" in node_names(ha.b, ha.admin), 5, "B to know n1")
    with ha.a.client(n1["node_token"]) as c:
        held = c.get("/api/v1/netmap").json()
    ha.a.stop()
    with ha.b.client(n1["node_token"]) as c:
        r = c.get("/api/v1/netmap", params={"since": held["version"], "timeout": 0})
    assert r.status_code == 200 and r.json()["full"] is True
    assert r.json()["self"]["address"] == n1["address"]
    with pytest.raises(httpx.ConnectError):
        with ha.a.client(n1["node_token"]) as c:
            c.get("/api/v1/health")


def test_admin_cli_on_an_etcd_backed_server(ha: Ha) -> None:
    # Through the running server's admin socket, and in-process once it is stopped (the
    # store settings come from server.json): both see and change the shared store.
    ha.b.admin("users", "create", "carol", input="password123\n")
    wait_until(lambda: "carol" in ha.a.admin("--json", "users", "list").stdout, 5, "A sees carol")
    ha.b.stop()
    listed = ha.b.admin("--json", "users", "list").stdout
    assert "carol" in listed and "admin" in listed
    ha.b.admin("users", "delete", "carol")
    wait_until(
        lambda: "carol" not in ha.a.admin("--json", "users", "list").stdout, 5, "A drops carol"
    )


def test_removed_server_withdraws_its_url_from_every_netmap(ha: Ha) -> None:
    # B's machine as a server-role node named as B's server is (remove-server on B).
    srv_b = register(ha.a, ha.admin, "srv-b", prove=True)
    n1 = register(ha.a, ha.admin, "n1")
    wait_until(lambda: "srv-b" in node_names(ha.b, ha.admin), 5, "B to know srv-b")

    def servers_on_a() -> list[str]:
        with ha.a.client(n1["node_token"]) as c:
            return list(c.get("/api/v1/netmap").json()["servers"])

    assert set(servers_on_a()) == {ha.a.url, ha.b.url}
    with ha.b.client(srv_b["node_token"]) as c:
        r = c.delete("/api/v1/cluster/servers/self")
        assert r.status_code == 403 and "server-role" in r.json()["error"]["message"]
    with ha.a.client(ha.admin) as c:
        assert c.patch(f"/api/v1/nodes/{srv_b['node_id']}", json={"role": "server"}).is_success
    # Asked of B (as a job asks any server) once B has the new role; A hears of it through
    # the watch.
    with ha.b.client(srv_b["node_token"]) as c:
        wait_until(
            lambda: c.delete("/api/v1/cluster/servers/self").json().get("withdrawn") == [ha.b.url],
            5,
            "B to withdraw its URL",
        )
        # Idempotent: nothing left to withdraw.
        r = c.delete("/api/v1/cluster/servers/self")
        assert r.status_code == 200 and r.json() == {"withdrawn": []}
    wait_until(lambda: servers_on_a() == [ha.a.url], 5, "A's netmaps to drop B's URL")


def store_endpoints(coord: CoordServer) -> set[str]:
    """The etcd endpoints the server uses now (its metrics say)."""
    with coord.client() as c:
        text = c.get("/metrics").text
    return set(re.findall(r'^pcloud_store_endpoint\{endpoint="([^"]+)"\} 1\.0$', text, re.M))


def test_store_endpoints_follow_the_clusters_members(ha: Ha) -> None:
    # A starts knowing one member only, B all three: both end up with the members' list, and
    # a member removed from the cluster leaves both lists (issue 12: a removed member's
    # address must never be asked again, whatever answers there later).
    urls = ha.etcd.endpoints()
    t = ha.etcd.client_tls
    ha.a.stop()
    ha.a.extra_args = etcd_args(urls[:1], t.ca, t.cert, t.key, "srv-a")
    ha.a.start()
    for coord in (ha.a, ha.b):
        wait_until(lambda c=coord: store_endpoints(c) == set(urls), 10, f"{coord.url}: 3 members")
    admin = ClusterAdmin(urls, t)
    try:
        gone = next(m for m in admin.members() if urls[2] in m.client_urls)
        admin.remove(gone.id)
    finally:
        admin.close()
    for coord in (ha.a, ha.b):
        wait_until(
            lambda c=coord: store_endpoints(c) == set(urls[:2]), 10, f"{coord.url}: 2 members"
        )
    register(ha.b, ha.admin, "after-removal")  # and the store still takes writes


async def test_a_server_list_only_change_reaches_the_backends_saved_netmap(
    ha: Ha, tmp_path: Path
) -> None:
    # A device's backend follows A. B's server is withdrawn (remove-server on B): for the
    # device nothing changes but the server list. The backend must save it anyway, since the
    # jobs (remove-server's calls to another server) read the saved list (issue 12).
    key = ha.a.auth_key(ha.admin, reusable=True, expires_in_s=600)
    srv_b = register(ha.a, ha.admin, "srv-b", prove=True)  # server secrets need a key proof
    with ha.a.client(ha.admin) as c:
        assert c.patch(f"/api/v1/nodes/{srv_b['node_id']}", json={"role": "server"}).is_success
    settings = BackendSettings(
        state_dir=tmp_path / "dev", socket=tmp_path / "dev.sock", hostname="dev",
        driver="fake", endpoint_check_s=0.5, poll_timeout=5,
    )  # fmt: skip
    backend = LocalBackend(settings, FakeDriver())
    await backend.start()
    try:
        await backend.login(LoginRequest(server_url=ha.a.join_link, auth_key=key))

        def saved_servers() -> set[str]:
            held = backend.store.load_netmap()
            return set(held.servers) if held else set()

        await asyncio.to_thread(
            wait_until, lambda: saved_servers() == {ha.a.url, ha.b.url}, 10, "both servers"
        )
        # Our endpoints reported, then a peer change: its delta brings our own record as it
        # is now (endpoints, online), so the withdrawal's delta below differs from what we
        # hold in the server list alone.
        await asyncio.to_thread(
            wait_until, lambda: backend.housekeeping.reported is not None, 10, "endpoints reported"
        )
        register(ha.a, ha.admin, "peer")
        await asyncio.to_thread(
            wait_until,
            lambda: any(p.hostname == "peer" for p in backend.netmap.peers),  # type: ignore[union-attr]
            10,
            "the backend to see the new peer",
        )
        before = backend.store.load_netmap()
        assert before is not None and before.self == backend.netmap.self  # type: ignore[union-attr]
        with ha.b.client(srv_b["node_token"]) as c:
            wait_until(
                lambda: c.delete("/api/v1/cluster/servers/self").json().get("withdrawn"),
                5,
                "B to withdraw its URL",
            )
        await asyncio.to_thread(
            wait_until, lambda: saved_servers() == {ha.a.url}, 10, "the saved list to drop B"
        )
        after = backend.store.load_netmap()
        assert after is not None and after.version > before.version
        assert after.peers == before.peers  # a server-list-only change indeed
        assert server_urls(backend) == [ha.a.url]  # what the jobs would ask
    finally:
        await backend.shutdown()
