"""Real backends with real wireguard-go in lab hosts (network namespaces): a coordination server
on rpi111, backends on rpi112 and laptop; login with a pre-auth key, ping through the tunnel,
and a backend restart while the server is down that keeps the tunnel."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # tests/integration has no __init__.py; tests.lab lives at the root
    sys.path.insert(0, str(REPO))

from tests.lab import Host, Lab, Proc, wait_for  # noqa: E402

pytest_plugins = ["tests.lab.fixtures"]
pytestmark = pytest.mark.lab

BIN = Path(sys.executable).parent
# wireguard-go refuses to run where the kernel module exists unless told otherwise.
WG_ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
SERVER_DIR = "/var/lib/pcloud/server"


def start_server(host: Host) -> tuple[Proc, str]:
    proc = host.spawn(
        "server",
        [str(BIN / "pcloud-server"), "--state-dir", SERVER_DIR, "--listen", f"{host.ip}:8443"],
    )
    link = wait_for(
        lambda: re.search(r"join link: (\S+)", proc.log_text()),
        timeout=30,
        what="the server's join link",
    )
    return proc, link.group(1)


def start_backend(host: Host) -> Proc:
    proc = host.spawn(
        "backend",
        [str(BIN / "pcloud-backend"), "--driver", "userspace", "--hostname", host.name],
        env=WG_ENV,
    )
    wait_for(
        lambda: host.pcloud("status", "--json", check=False).returncode == 0,
        timeout=30,
        what=f"{host.name}'s backend socket",
    )
    return proc


def status(host: Host) -> dict[str, object]:
    data: dict[str, object] = json.loads(host.pcloud("status", "--json").stdout)
    return data


def ping(host: Host, ip: str) -> bool:
    return host.run(["ping", "-c1", "-W1", ip], check=False).returncode == 0


def make_key(srv: Host) -> str:
    admin = [str(BIN / "pcloud-server"), "admin", "--state-dir", SERVER_DIR]
    srv.run(
        [*admin, "users", "create", "alice", "--password-stdin"], input="correct horse battery\n"
    )
    out = srv.run([*admin, "--json", "auth-keys", "create", "--user", "alice", "--reusable"])
    key: str = json.loads(out.stdout)["key"]
    return key


def test_two_backends_ping_through_wireguard_and_survive_a_restart(lab: Lab) -> None:
    srv, pi, laptop = lab.add_host("rpi111"), lab.add_host("rpi112"), lab.add_host("laptop")
    server, link = start_server(srv)
    key = make_key(srv)
    start_backend(pi)
    laptop_backend = start_backend(laptop)

    t0 = time.monotonic()
    for host in (pi, laptop):
        out = host.pcloud("login", link, "--auth-key", key, check=False)
        assert out.returncode == 0, out.stderr + lab.log_tails()
    pi_ip = pi.pcloud("ip").stdout.strip()
    laptop_ip = laptop.pcloud("ip").stdout.strip()
    wait_for(lambda: ping(laptop, pi_ip), timeout=20, what="laptop -> rpi112 over WireGuard")
    first_ping_s = time.monotonic() - t0
    assert ping(pi, laptop_ip)
    out = laptop.pcloud("ping", "rpi112", "-c", "1")
    assert f"answered via {pi.ip}:" in out.stdout

    st = status(laptop)
    assert st["state"] == "Running"
    peers = st["peers"]
    assert isinstance(peers, list) and [p["hostname"] for p in peers] == ["rpi112"]
    assert peers[0]["last_handshake"] and peers[0]["rx_bytes"] > 0
    table = laptop.pcloud("status").stdout
    assert re.search(
        rf"{re.escape(pi_ip)}\s+rpi112\.pcloud\.internal\s+alice\s+client\s+"
        rf"active; direct {re.escape(pi.ip)}:\d+",
        table,
    ), table

    # Server down, laptop's backend restarted: no login, same interface, tunnel still up.
    server.stop()
    laptop_backend.stop()
    assert ping(laptop, pi_ip), "stopping the backend must not take the tunnel down"
    start_backend(laptop)
    wait_for(lambda: status(laptop)["state"] == "Running", timeout=20, what="laptop Running")
    assert ping(laptop, pi_ip)
    assert laptop.pcloud("ip").stdout.strip() == laptop_ip
    print(f"login to first ping: {first_ping_s:.2f} s")


def test_a_moved_device_reports_its_new_endpoint(lab: Lab) -> None:
    srv, pi, laptop = lab.add_host("rpi111"), lab.add_host("rpi112"), lab.add_host("laptop")
    _, link = start_server(srv)
    key = make_key(srv)
    for host in (pi, laptop):
        start_backend(host)
        host.pcloud("login", link, "--auth-key", key)
    laptop_ip = laptop.pcloud("ip").stdout.strip()
    wait_for(lambda: ping(pi, laptop_ip), timeout=20, what="rpi112 -> laptop")

    new_lan_ip = lab.free_address()
    laptop.set_lan_address(new_lan_ip)

    def laptop_endpoints() -> list[str]:
        peers = status(pi)["peers"]
        assert isinstance(peers, list)
        return [e for p in peers if p["hostname"] == "laptop" for e in p["endpoints"]]

    # The backend checks its addresses every 10 s and re-reports; the server fans it out.
    wait_for(
        lambda: any(e.startswith(f"{new_lan_ip}:") for e in laptop_endpoints()),
        timeout=30,
        what="laptop's new endpoint in rpi112's netmap",
    )
    wait_for(lambda: ping(pi, laptop_ip), timeout=20, what="rpi112 -> laptop after the move")
