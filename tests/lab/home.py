"""The lab's home site with its server, for the scenarios across sites (DESIGN section 9): a home
LAN behind a router that forwards one TCP and one UDP port to rpi111 (`home_mesh`), backends
logging in headless through the home's public address (`headless`, `public_link`) and the path
a host's status shows for a peer (`peer`). Used by the site grid, relay and reach tests, the
`--sites` demo and the NAT benches."""

from __future__ import annotations

import re
from typing import Any

from .host import Host
from .lab import Lab
from .mesh import Mesh
from .sites import HOME_PUBLIC, HTTPS_PORT, Sites

PUBLIC_URL = f"https://{HOME_PUBLIC}:{HTTPS_PORT}"


def public_link(mesh: Mesh) -> str:
    assert mesh.server_proc is not None
    m = re.findall(r"join link \(public\): (\S+)", mesh.server_proc.log_text())
    assert m, "the server printed no public join link"
    return str(m[-1])


def headless(mesh: Mesh, host: Host, link: str, key: str, *extra: str, wait: bool = True) -> None:
    """A headless backend logging in with an auth key file; `wait=False` for many at once."""
    key_file = host.path("/etc/pcloud/auth-key")
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    mesh.start_backend(
        host, "--headless", "--server", link, "--auth-key-file", "/etc/pcloud/auth-key", *extra,
        wait=wait,
    )  # fmt: skip


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
