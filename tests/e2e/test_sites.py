"""Reach across NATs (DESIGN section 9) on the lab's sites: a home LAN behind a router that
forwards one TCP and one UDP port to rpi111, and a laptop behind a cafe's NAT that logs in
through the home's public address and pings rpi111 directly."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import FIGURES
from tests.lab import Host, Lab, wait_for
from tests.lab.mesh import Mesh, ping
from tests.lab.sites import HOME_PUBLIC, HTTPS_PORT, WG_PORT, Sites

pytestmark = [pytest.mark.lab, pytest.mark.sites]
Figure = Callable[..., None]
PUBLIC_URL = f"https://{HOME_PUBLIC}:{HTTPS_PORT}"


def public_link(mesh: Mesh) -> str:
    assert mesh.server_proc is not None
    m = re.findall(r"join link \(public\): (\S+)", mesh.server_proc.log_text())
    assert m, "the server printed no public join link"
    return str(m[-1])


def headless(mesh: Mesh, host: Host, link: str, key: str, *extra: str) -> None:
    key_file = host.path("/etc/pcloud/auth-key")
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    mesh.start_backend(
        host, "--headless", "--server", link, "--auth-key-file", "/etc/pcloud/auth-key", *extra
    )


def peer(mesh: Mesh, host: Host, name: str) -> dict[str, Any]:
    for p in mesh.status(host)["peers"]:
        if p["hostname"] == name:
            return dict(p)
    raise KeyError(name)


def home_mesh(lab: Lab, *names: str, expiration: str = "1h") -> tuple[list[Host], Sites, Mesh, str]:
    """`names` on the home LAN behind the home router, the coordination server on the first
    (its public URL the router's forwarded port), an admin and the admin's reusable auth key."""
    hosts = [lab.add_host(name) for name in names]
    sites = Sites(lab)
    sites.home(*hosts)
    mesh = Mesh(lab)
    mesh.start_server(hosts[0], "--public-url", PUBLIC_URL)
    mesh.create_user("admin", "admin-password", admin=True)
    return hosts, sites, mesh, mesh.auth_key("admin", reusable=True, expiration=expiration)


@pytest.fixture
def home(lab: Lab) -> tuple[Mesh, Sites]:
    """rpi111 (server, WireGuard on the forwarded port) at home, behind the home router."""
    # rpi112: a Pi with no port forward (only tests that start it)
    (rpi111, _rpi112), sites, mesh, key = home_mesh(lab, "rpi111", "rpi112")
    headless(
        mesh, rpi111, mesh.link, key,
        "--listen-port", str(WG_PORT), "--advertise-endpoint", f"{HOME_PUBLIC}:{WG_PORT}",
    )  # fmt: skip
    mesh.wait_running(rpi111)
    return mesh, sites


def paths(mesh: Mesh, hosts: list[Host]) -> dict[tuple[str, str], str]:
    """(from, to) -> the path `pcloud status` shows, for every pair of `hosts`."""
    out = {}
    for src in hosts:
        for p in mesh.status(src)["peers"]:
            if p["hostname"] in {h.name for h in hosts}:
                out[(src.name, p["hostname"])] = str(p["path"])
    return out


def record_paths(scenario: str, table: dict[tuple[str, str], str]) -> None:
    for (src, dst), path in sorted(table.items()):
        FIGURES.append((scenario, f"path {src} -> {dst}", path))
        print(f"[{scenario}] {src} -> {dst}: {path}")


def test_cafe_laptop_reaches_home_pis_directly(home: tuple[Mesh, Sites], figure: Figure) -> None:
    """The laptop logs in through the home router's public address and reaches rpi111 on the
    forwarded UDP port; rpi112 has no forward: each side learns the other's public candidate in
    the same netmap push and sends to it, so the crossing handshakes open both NATs. Meanwhile a
    phone whose join link leads nowhere says why in its status."""
    mesh, sites = home
    rpi111, rpi112 = mesh.lab["rpi111"], mesh.lab["rpi112"]
    link = public_link(mesh)
    assert link.startswith(PUBLIC_URL + "/#fp=sha256:")
    desk = sites.add_host("office", "desk")
    headless(mesh, desk, link.replace(HOME_PUBLIC, "198.51.100.99"), mesh.auth_key("admin"))
    phone = sites.add_host("mobile", "phone")
    headless(mesh, phone, link, mesh.auth_key("admin"))
    headless(mesh, rpi112, mesh.link, mesh.auth_key("admin"))
    laptop = sites.add_host("cafe", "laptop")
    headless(mesh, laptop, link, mesh.auth_key("admin"))
    mesh.wait_running(laptop)
    took = mesh.wait_ping(laptop, mesh.address(rpi111), timeout=20)
    figure("cafe laptop -> rpi111 (forwarded port) first ping after Running", took)
    mesh.wait_running(rpi112)
    took = mesh.wait_ping(laptop, mesh.address(rpi112), timeout=30)
    figure("cafe laptop -> rpi112 (hole punched) first ping after both Running", took)
    mesh.wait_ping(rpi112, mesh.address(laptop), timeout=10)
    mesh.wait_ping(rpi112, mesh.address(rpi111), timeout=10)

    def all_direct() -> dict[tuple[str, str], str] | None:
        t = paths(mesh, [rpi111, rpi112, laptop])
        return t if len(t) == 6 and all(v.startswith("direct ") for v in t.values()) else None

    table = wait_for(all_direct, timeout=15, what="a direct path between every pair")
    assert table is not None
    record_paths("sites", table)
    home_ip, cafe_ip = sites.public["home"], sites.public["cafe"]
    # The laptop talks to the forwarded port, rpi111 answers the cafe's NAT.
    assert table[("laptop", "rpi111")] == f"direct {home_ip}:{WG_PORT}"
    assert table[("rpi111", "laptop")].startswith(f"direct {cafe_ip}:")
    # Through both NATs on their public sides: nothing forwarded for rpi112.
    assert table[("laptop", "rpi112")].startswith(f"direct {home_ip}:")
    assert table[("laptop", "rpi112")] != f"direct {home_ip}:{WG_PORT}"
    assert table[("rpi112", "laptop")].startswith(f"direct {cafe_ip}:")
    # LAN neighbours stay on LAN addresses.
    assert table[("rpi112", "rpi111")] == f"direct {rpi111.ip}:{WG_PORT}"
    assert table[("rpi111", "rpi112")].startswith(f"direct {rpi112.ip}:")
    # The desk's login is retried, and its status says why it is not in.
    st = mesh.status(desk)
    assert st["state"] != "Running"
    assert "login failing" in (st["error"] or ""), st
    # Behind the mobile (symmetric) NAT the phone reaches rpi111 only thanks to the forward;
    # rpi112 and the laptop have no direct path to it: rpi111's relay carries those pairs.
    mesh.wait_running(phone)
    mesh.wait_ping(phone, mesh.address(rpi111), timeout=20)
    mesh.wait_ping(phone, mesh.address(rpi112), timeout=30)
    mesh.wait_ping(phone, mesh.address(laptop), timeout=30)
    relayed = [("rpi112", "phone"), ("phone", "rpi112"), ("laptop", "phone"), ("phone", "laptop")]

    def settled() -> dict[tuple[str, str], str] | None:
        # Traffic on the forwarded path: if it started on the relay, a probe finds it direct.
        ping(phone, mesh.address(rpi111))
        t = paths(mesh, [rpi111, rpi112, laptop, phone])
        ok = all(t.get(pair) == "relay rpi111" for pair in relayed)
        if ok and t.get(("phone", "rpi111"), "").startswith("direct "):
            return t
        print("phone's paths not settled yet:", {k: v for k, v in t.items() if "phone" in k})
        return None

    table = wait_for(settled, timeout=45, what="the phone's pairs on the relay, rpi111 direct")
    assert table is not None
    record_paths("sites", {k: v for k, v in table.items() if "phone" in k})
    assert table[("phone", "rpi111")] == f"direct {home_ip}:{WG_PORT}"
