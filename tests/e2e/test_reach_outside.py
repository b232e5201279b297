"""Reach from outside, as it changes (DESIGN section 9), in one lab story:

1. two coordination servers on one etcd store at home; only rpi111 has `--public-url`, by name
   (`https://home.example.net:8443`, the lab hosts' private /etc/hosts stand in for dynamic
   DNS); the home router forwards 8444 to rpi112. A laptop at the cafe logs in through rpi112's
   forward: rpi112's leaf must name the public host (the cluster's public URLs are in the
   store), and its netmap lists the public URL;
2. the laptop's NAT is `endpoint-independent` in its status (the servers' address echo);
3. the laptop moves from the cafe to the mobile network: pings to rpi111 resume and rpi111's
   path to it is re-chosen (the mobile router's public address) within 10 s, and its NAT
   becomes `endpoint-dependent (symmetric)`;
4. the home router gets another public address and the name follows: the server re-resolves
   it and re-advertises rpi111's candidate, the laptop's backend reconnects through the name,
   and the laptop pings rpi111 on the new address.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

import pytest

from pcloud.server.security.tls import TlsFiles, leaf_names
from tests.lab import Host, Lab, Proc, wait_for
from tests.lab.home import headless, peer, public_link
from tests.lab.mesh import BIN, PORT, SERVER_DIR, Mesh, ping
from tests.lab.sites import HOME_PUBLIC, HTTPS_PORT, SECOND_HTTPS_PORT, SITES, WG_PORT, Sites

pytestmark = [pytest.mark.lab, pytest.mark.sites]
Figure = Callable[..., None]
HOME_NAME = "home.example.net"
PUBLIC_URL = f"https://{HOME_NAME}:{HTTPS_PORT}"
NEW_HOME = "203.0.113.11"
ETCD_PORT = 2379


def point_name(hosts: list[Host], ip: str) -> None:
    """The dynamic-DNS name now resolves to `ip` on every host (written in place: the file is
    bind-mounted into the host)."""
    for host in hosts:
        path = host.path("/etc/hosts")
        kept = [ln for ln in path.read_text().splitlines() if HOME_NAME not in ln]
        path.write_text("\n".join([*kept, f"{ip} {HOME_NAME}"]) + "\n")


def start_etcd(host: Host) -> str:
    """A one-member etcd on the home LAN (plain HTTP: the lab's stand-in for the HA store)."""
    url = f"http://{host.ip}:{ETCD_PORT}"
    peer_url = "http://127.0.0.1:2380"
    host.spawn("etcd", [
        "etcd", "--name", "home", "--data-dir", "/var/lib/pcloud/etcd",
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"home={peer_url}",
    ])  # fmt: skip
    wait_for(
        lambda: host.run(["bash", "-c", f"exec 3<>/dev/tcp/{host.ip}/{ETCD_PORT}"], check=False,
                         timeout=5).returncode == 0,
        timeout=20, what="etcd to listen",
    )  # fmt: skip
    return url


def start_second_server(mesh: Mesh, host: Host, etcd: str, *extra: str) -> Proc:
    """pcloud-server on `host` sharing the store, with the network CA (what `pcloud ha join`
    fetches over the server-role channel) and no --public-url of its own unless `extra` says."""
    assert mesh.server is not None
    ours, theirs = (
        TlsFiles.in_dir(mesh.server.path(SERVER_DIR)),
        TlsFiles.in_dir(host.path(SERVER_DIR)),
    )
    theirs.ca_cert.parent.mkdir(parents=True, mode=0o700)
    shutil.copy2(ours.ca_cert, theirs.ca_cert)
    shutil.copy2(ours.ca_key, theirs.ca_key)
    proc = host.spawn("pcloud-server", [
        str(BIN / "pcloud-server"), "--state-dir", SERVER_DIR, "--listen", f"{host.ip}:{PORT}",
        "--hostname", host.name, "--store", "etcd", "--etcd-endpoint", etcd, *extra,
    ])  # fmt: skip
    wait_for(lambda: "join link:" in proc.log_text(), timeout=30, what=f"{host.name}'s server")
    return proc


def test_outside_laptop_through_a_second_server_moves_and_home_renumbers(
    lab: Lab, figure: Figure
) -> None:
    rpi111, rpi112 = lab.add_host("rpi111"), lab.add_host("rpi112")
    sites = Sites(lab)
    sites.home(rpi111, second=rpi112)
    laptop = sites.add_host("cafe", "laptop")
    everyone = [rpi111, rpi112, laptop]
    assert all("/etc/hosts" in h.private_files for h in everyone)
    point_name(everyone, HOME_PUBLIC)
    etcd = start_etcd(rpi111)
    mesh = Mesh(lab)
    mesh.start_server(rpi111, "--public-url", PUBLIC_URL, "--store", "etcd",
                      "--etcd-endpoint", etcd)  # fmt: skip
    mesh.create_user("admin", "admin-password", admin=True)
    key = mesh.auth_key("admin", reusable=True)
    start_second_server(mesh, rpi112, etcd)
    # 1. Every server's leaf names the public host; the laptop logs in through rpi112's forward.
    assert HOME_NAME in leaf_names(TlsFiles.in_dir(rpi112.path(SERVER_DIR)))
    headless(
        mesh, rpi111, mesh.link, key,
        "--listen-port", str(WG_PORT), "--advertise-endpoint", f"{HOME_NAME}:{WG_PORT}",
    )  # fmt: skip
    link = public_link(mesh)
    assert link.startswith(PUBLIC_URL + "/#fp=")
    via_second = link.replace(f":{HTTPS_PORT}/", f":{SECOND_HTTPS_PORT}/")
    headless(mesh, laptop, via_second, key)
    mesh.wait_running(laptop)
    netmap = laptop.path("/var/lib/pcloud/netmap.json").read_text()
    assert PUBLIC_URL in netmap, "the netmap does not list the public URL"
    address = mesh.address(rpi111)
    took = mesh.wait_ping(laptop, address, timeout=20)
    figure("cafe laptop logged in via the 2nd server -> rpi111 first ping", took)
    assert peer(mesh, laptop, "rpi111")["path"] == f"direct {HOME_PUBLIC}:{WG_PORT}"
    # 2. The NAT's kind, from the address echo through the home forward.
    wait_for(lambda: mesh.status(laptop)["nat"] == "endpoint-independent", timeout=15,
             what="the cafe laptop's NAT kind")  # fmt: skip
    assert "# NAT: endpoint-independent" in laptop.pcloud("status").stdout

    # 3. The laptop moves to the mobile network.
    mobile = SITES["mobile"].wan
    sites.add_router("mobile")
    start = time.monotonic()
    sites.move(laptop, "mobile")

    def resumed() -> bool:
        # The ping first: it is the traffic that makes rpi111 see the laptop's new address.
        answered = ping(laptop, address)
        return answered and peer(mesh, rpi111, "laptop")["path"].startswith(f"direct {mobile}:")

    wait_for(resumed, timeout=10, interval=0.2, what="pings and path after the move")
    figure("laptop moved cafe -> mobile: pings resume, path re-chosen", time.monotonic() - start)
    assert peer(mesh, laptop, "rpi111")["path"] == f"direct {HOME_PUBLIC}:{WG_PORT}"
    wait_for(
        lambda: mesh.status(laptop)["nat"] == "endpoint-dependent (symmetric)",
        timeout=15, what="the mobile laptop's NAT kind",
    )  # fmt: skip

    # 4. The home router's public address changes; the name follows it.
    start = time.monotonic()
    sites.renumber("home", NEW_HOME)
    point_name(everyone, NEW_HOME)

    def reconverged() -> bool:
        # The server re-advertised rpi111 at the new address, the laptop's control connection
        # is back, and its pings answer. The path itself may stay on the old address here: the
        # lab's home router keeps translating the established WireGuard flow (a port forward's
        # conntrack entry outlives the address), and WireGuard rightly keeps a path that works.
        st = mesh.status(laptop)
        rpi = peer(mesh, laptop, "rpi111")
        return (
            st["control_unreachable_since"] is None
            and f"{NEW_HOME}:{WG_PORT}" in rpi["endpoints"]
            and rpi["path"].startswith("direct ")
            and ping(laptop, address)
        )

    wait_for(reconverged, timeout=40, interval=0.3, what="re-convergence on the new address")
    figure("home renumbered: laptop back on the new address", time.monotonic() - start)
    assert f"{NEW_HOME}:{WG_PORT}" in peer(mesh, laptop, "rpi111")["endpoints"]
