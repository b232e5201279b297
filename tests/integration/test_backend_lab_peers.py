"""A peer change reaches a running tunnel as a change, never as an interface rebuild.

Real coordination server, real backends and wireguard-go in lab hosts: a third device joins and
leaves while the first two keep their tunnel; the interface keeps its index and the existing
peer keeps its handshake (WireGuard would only re-handshake if its session were torn down).
"""

from __future__ import annotations

import pytest

from tests.lab import Host, Lab, wait_for
from tests.lab.mesh import Mesh, ping

pytestmark = pytest.mark.lab


def ifindex(host: Host) -> int:
    return int(host.run(["cat", "/sys/class/net/pcloud0/ifindex"]).stdout)


def handshakes(host: Host) -> dict[str, int]:
    out = host.run(["wg", "show", "pcloud0", "latest-handshakes"]).stdout
    return {key: int(ts) for key, ts in (line.split() for line in out.splitlines())}


def test_third_node_comes_and_goes_without_touching_the_first_tunnel(lab: Lab) -> None:
    mesh = Mesh(lab)
    mesh.start_server(lab.add_host("rpi111"))
    mesh.create_user("admin", "admin-password", admin=True)
    key = mesh.auth_key("admin", reusable=True)
    a, b, c = (lab.add_host(n) for n in ("rpi112", "rpi113", "laptop"))
    mesh.join_headless(a, key)
    mesh.join_headless(b, key)
    b_ip = mesh.address(b)
    mesh.wait_ping(a, b_ip)
    b_key = mesh.status(b)["self"]["public_key"]
    index_before = ifindex(a)
    shake_before = handshakes(a)[b_key]
    assert shake_before > 0

    mesh.login(c, key=key)
    c_key = mesh.status(c)["self"]["public_key"]
    wait_for(lambda: c_key in handshakes(a), timeout=15, what="the laptop as a peer on rpi112")
    mesh.wait_ping(c, mesh.address(a))
    c.pcloud("logout")
    wait_for(lambda: c_key not in handshakes(a), timeout=15, what="the laptop to leave rpi112")

    assert ifindex(a) == index_before, "the interface was recreated"
    assert handshakes(a)[b_key] == shake_before, "the first tunnel re-handshook"
    assert ping(a, b_ip)
