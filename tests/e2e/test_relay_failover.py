"""Relay failover (DESIGN section 9): two coordination servers at home, each with a relay that
the home router forwards (rpi111: 8443/tcp+udp, rpi112: 8444/tcp+udp, each with its own
`--public-url`); two phones behind endpoint-dependent NATs ping through rpi111's relay. Then
rpi111 dies as a node does (its pcloud-server killed and nothing answers from the host any more:
no ICMP either), and the pair's pings resume through rpi112's relay, which status names."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from tests.e2e.test_reach_outside import start_etcd, start_second_server
from tests.lab import Host, Lab, wait_for
from tests.lab.home import PUBLIC_URL, headless, peer, public_link
from tests.lab.mesh import Mesh, ping
from tests.lab.sites import HOME_PUBLIC, SECOND_HTTPS_PORT, Sites

pytestmark = [pytest.mark.lab, pytest.mark.sites]
Figure = Callable[..., None]
SECOND_URL = f"https://{HOME_PUBLIC}:{SECOND_HTTPS_PORT}"
RESUME_S = 15.0  # the deadline for pings through the other relay after the node dies


def go_dark(host: Host) -> None:
    """The host drops everything that reaches it: a node that lost power answers nothing
    (a killed process alone leaves the kernel's ICMP port-unreachable, a hint we must not need)."""
    rules = (
        "table inet pcl_dark { chain in { type filter hook input priority -10; policy drop; }; }"
    )
    host.run(["nft", "-f", "-"], input=rules)


def test_relayed_pair_moves_to_the_other_servers_relay(lab: Lab, figure: Figure) -> None:
    rpi111, rpi112 = lab.add_host("rpi111"), lab.add_host("rpi112")
    sites = Sites(lab)
    sites.home(rpi111, second=rpi112)
    etcd = start_etcd(rpi112)  # the store outlives rpi111
    mesh = Mesh(lab)
    mesh.start_server(rpi111, "--public-url", PUBLIC_URL, "--store", "etcd",
                      "--etcd-endpoint", etcd)  # fmt: skip
    mesh.create_user("alice", "alice-password")
    key = mesh.auth_key("alice", reusable=True)
    start_second_server(mesh, rpi112, etcd, "--public-url", SECOND_URL)
    link = public_link(mesh)
    phone, phone2 = sites.add_host("mobile", "phone"), sites.add_host("mobile2", "phone2")
    for host in (phone, phone2):
        headless(mesh, host, link, key)
    for host in (phone, phone2):
        mesh.wait_running(host)
    address, address2 = mesh.address(phone2), mesh.address(phone)

    def on(relay: str) -> bool:
        return all(
            peer(mesh, src, dst)["path"] == f"relay {relay}"
            for src, dst in ((phone, "phone2"), (phone2, "phone"))
        )

    mesh.wait_ping(phone, address, timeout=40)
    wait_for(lambda: on("rpi111"), timeout=10, what="the pair on rpi111's relay")

    # rpi111 dies: its server process killed, then the host silent.
    assert mesh.server_proc is not None
    mesh.server_proc.signal(signal.SIGKILL)
    assert mesh.server_proc.wait(timeout=5) != 0
    go_dark(rpi111)
    start = time.monotonic()
    print("rpi111 dark at", time.strftime("%H:%M:%S", time.gmtime()))

    def resumed() -> bool:
        return ping(phone, address) and ping(phone2, address2) and on("rpi112")

    wait_for(resumed, timeout=RESUME_S, interval=0.2, what="pings through rpi112's relay")
    took = time.monotonic() - start
    figure("relaying server rpi111 died: the phones' pings resume through rpi112's relay", took)
    print(f"relay failover rpi111 -> rpi112: {took:.1f} s")
    for host in (phone, phone2):  # when each side left rpi111's relay, and why
        log = mesh.backends[host.name].log_text()
        print(host.name, [ln for ln in log.splitlines() if "relay.link" in ln or "relayed" in ln])
