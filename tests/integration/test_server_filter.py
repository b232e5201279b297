"""The packet filter as the coordination server sends it: the `filter` field of full maps and
deltas, the built-in server rule in the dry run, and `PUT /acl` refusing (unless forced) a policy
that takes reach away between servers.

Tier: in-process (`coord_app`, tests.support.inproc): API behaviour only, no real process needed.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from tests.integration.test_server_api import err, register
from tests.support.inproc import CoordApp

PORTS = """{
  "tagOwners": {"tag:server": []},
  "acls": [{"action": "accept", "src": ["alice@"], "proto": "tcp", "dst": ["tag:server:22"]}],
}"""


def rules_by_why(filter_rules: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["why"]: r for r in filter_rules}


async def test_filter_in_netmaps_and_the_server_rule(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()
    alice = coord_app.create_user(admin, "alice")
    key = coord_app.auth_key(admin, user="admin", role="server", tags=["tag:server"], reusable=True)
    srv1, srv2 = register(coord_app, key, "rpi111"), register(coord_app, key, "rpi112")
    laptop = register(coord_app, alice, "laptop")
    # Default policy: every visible peer, every port (who is visible is the policy's part).
    with coord_app.client(laptop["node_token"]) as c:
        full = c.get("/api/v1/netmap").json()
    for answer in (srv1["netmap"], full):
        (rule,) = answer["filter"]
        assert rule["src"] == ["*"] and rule["ports"] == [[0, 65535]] and rule["proto"] == []

    with coord_app.client(admin) as c:
        check = c.post("/api/v1/acl/check", content=PORTS).json()
        assert check["ok"] and len(check["builtin"]) == 3
        assert check["server_reach"] and check["server_reach"][0].startswith("rpi111 -> rpi112")
        assert any("6443 (K3s API)" in w for w in check["warnings"])
        refused = c.put("/api/v1/acl", content=PORTS)
        assert refused.status_code == 409 and err(refused)["code"] == "server_reach_lost"
        assert "rpi111 -> rpi112 loses tcp" in err(refused)["message"]
        assert "force" in err(refused)["message"]
        assert c.get("/api/v1/acl").json()["policy"] is None  # nothing applied
        assert c.put("/api/v1/acl", content=PORTS, params={"force": "true"}).status_code == 200

    with coord_app.client(srv1["node_token"]) as c:
        first = c.get("/api/v1/netmap").json()
        rules = rules_by_why(first["filter"])
        assert rules["acls[0]"]["src"] == [laptop["address"]]
        assert rules["acls[0]"]["ports"] == [[22, 22]] and rules["acls[0]"]["proto"] == [6]
        (builtin,) = [
            r for r in first["filter"] if r["why"].startswith("built-in") and r["proto"] == [6]
        ]
        assert srv2["address"] in builtin["src"] and [6443, 6443] in builtin["ports"]
        # Nothing new: the answer leaves the filter out (null = unchanged).
        idle = c.get("/api/v1/netmap", params={"since": first["version"], "timeout": 0}).json()
        assert idle["filter"] is None
    # A port-only change moves no peer, yet the servers' long polls wake with the new filter.
    async with coord_app.async_client(srv1["node_token"]) as ca:
        poll = asyncio.create_task(
            ca.get("/api/v1/netmap", params={"since": first["version"], "timeout": 20})
        )
        await asyncio.sleep(0)  # the poll is sent; a change before it parks still counts
        with coord_app.client(admin) as c:
            wider = PORTS.replace("tag:server:22", "tag:server:22,8080")
            assert c.put("/api/v1/acl", content=wider).status_code == 200  # no loss: no force
        answer = (await poll).json()
    assert answer["peers_changed"] == [] and answer["peers_removed"] == []
    assert rules_by_why(answer["filter"])["acls[0]"]["ports"] == [[22, 22], [8080, 8080]]


async def test_a_new_source_device_updates_the_filter_of_those_it_may_reach(
    coord_app: CoordApp,
) -> None:
    admin = coord_app.setup_admin()
    alice = coord_app.create_user(admin, "alice")
    key = coord_app.auth_key(admin, user="admin", role="server", tags=["tag:server"])
    srv = register(coord_app, key, "rpi111")
    first_laptop = register(coord_app, alice, "laptop")
    with coord_app.client(admin) as c:
        assert c.put("/api/v1/acl", content=PORTS).status_code == 200  # one server: no loss
    with coord_app.client(srv["node_token"]) as c:
        first = c.get("/api/v1/netmap").json()
    assert rules_by_why(first["filter"])["acls[0]"]["src"] == [first_laptop["address"]]
    async with coord_app.async_client(srv["node_token"]) as ca:
        poll = asyncio.create_task(
            ca.get("/api/v1/netmap", params={"since": first["version"], "timeout": 20})
        )
        second = register(coord_app, alice, "phone")
        answer = (await poll).json()
    assert [p["hostname"] for p in answer["peers_changed"]] == ["phone"]
    nets = [ipaddress.ip_network(s) for s in rules_by_why(answer["filter"])["acls[0]"]["src"]]
    for device in (first_laptop, second):  # both of alice's devices, maybe as one prefix
        assert any(ipaddress.ip_address(device["address"]) in n for n in nets)
    assert all(n.num_addresses <= 2 for n in nets)  # and nothing wider
