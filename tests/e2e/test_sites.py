"""Reach across NATs (DESIGN section 9) on the lab's sites: a home LAN behind a router that
forwards one TCP and one UDP port to rpi111, and a laptop behind a cafe's NAT that logs in
through the home's public address and pings rpi111 directly."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.lab import Host, Lab, wait_for
from tests.lab.mesh import Mesh
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


@pytest.fixture
def home(lab: Lab) -> tuple[Mesh, Sites]:
    """rpi111 (server, WireGuard on the forwarded port) at home, behind the home router."""
    rpi111 = lab.add_host("rpi111")
    sites = Sites(lab)
    sites.home(rpi111)
    mesh = Mesh(lab)
    mesh.start_server(rpi111, "--public-url", PUBLIC_URL)
    mesh.create_user("admin", "admin-password", admin=True)
    key = mesh.auth_key("admin", reusable=True)
    headless(
        mesh, rpi111, mesh.link, key,
        "--listen-port", str(WG_PORT), "--advertise-endpoint", f"{HOME_PUBLIC}:{WG_PORT}",
    )  # fmt: skip
    mesh.wait_running(rpi111)
    return mesh, sites


def test_cafe_laptop_reaches_home_through_the_public_url(
    home: tuple[Mesh, Sites], figure: Figure
) -> None:
    mesh, sites = home
    rpi111 = mesh.lab["rpi111"]
    laptop = sites.add_host("cafe", "laptop")
    link = public_link(mesh)
    assert link.startswith(PUBLIC_URL + "/#fp=sha256:")
    key = mesh.auth_key("admin")
    headless(mesh, laptop, link, key)
    st = mesh.wait_running(laptop, timeout=30)
    took = mesh.wait_ping(laptop, mesh.address(rpi111), timeout=20)
    figure("cafe laptop -> rpi111 first ping after Running", took)
    # Direct both ways: the laptop talks to the forwarded port, rpi111 answers the cafe's NAT.
    assert peer(mesh, laptop, "rpi111")["endpoint"] == f"{HOME_PUBLIC}:{WG_PORT}"
    seen = peer(mesh, rpi111, "laptop")["endpoint"] or ""
    assert seen.startswith(sites.public["cafe"] + ":"), seen
    assert st["self"]["address"]


def test_a_failing_headless_login_says_why_in_status(home: tuple[Mesh, Sites]) -> None:
    mesh, sites = home
    laptop = sites.add_host("cafe", "laptop")
    # A join link to a public address where nothing answers: retried, and said so meanwhile.
    bad = public_link(mesh).replace(HOME_PUBLIC, "198.51.100.99")
    headless(mesh, laptop, bad, mesh.auth_key("admin"))
    st: dict[str, Any] = wait_for(
        lambda: (s := mesh.status(laptop)).get("error") and s,
        timeout=30,
        what="the laptop's status to name the login problem",
    )
    assert st["state"] != "Running"
    assert "login failing" in st["error"], st
