"""The seed's scenarios on virtual hosts: bootstrap, ACLs, auth keys, rotation, removal, outages.

Each test builds its own lab (a coordination server on rpi111 from the `mesh` fixture), drives it
only through the real programs, and records the timings it saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from tests.lab import Lab, wait_for
from tests.lab.mesh import BIN, WG_ENV, Mesh, ping, ping_loss

pytestmark = pytest.mark.lab
Figure = Callable[..., None]


def test_bootstrap_and_clients_join(mesh: Mesh, lab: Lab, figure: Figure) -> None:
    rpi111 = mesh.server
    assert rpi111 is not None
    rpi112, rpi113, laptop = (lab.add_host(n) for n in ("rpi112", "rpi113", "laptop"))
    mesh.create_user("alice", "alice-password")
    started = time.monotonic()
    mesh.join_headless(rpi111, mesh.auth_key("admin", role="server"))
    assert mesh.address(rpi111) == "10.0.0.1"
    key = mesh.auth_key("admin", reusable=True)
    for pi in (rpi112, rpi113):
        mesh.join_headless(pi, key)
    mesh.start_backend(laptop)
    up = time.monotonic()
    mesh.login(laptop, user="alice", password="alice-password")
    mesh.wait_ping(laptop, "10.0.0.1")
    figure("laptop login -> first ping", time.monotonic() - up)
    hosts = [rpi111, rpi112, rpi113, laptop]
    # Everyone sees every other host: the admin's devices reach everything.
    seen = wait_for(
        lambda: all(mesh.peers(h) == {x.name for x in hosts} - {h.name} for h in hosts),
        timeout=15,
        what="every host to see the three others",
    )
    assert seen
    ok, total, failed = mesh.ping_all(hosts)
    assert (ok, failed) == (total, [])
    figure("bootstrap to 12/12 pairs", time.monotonic() - started)


def test_acl_private_laptop_then_grant_then_isolate(mesh: Mesh, lab: Lab, figure: Figure) -> None:
    alice_laptop, bob_laptop, rpi112 = (lab.add_host(n) for n in ("alice", "bob", "rpi112"))
    mesh.create_user("alice", "alice-password")
    mesh.create_user("bob", "bob-password")
    mesh.join_headless(rpi112, mesh.auth_key("admin", role="server"))
    mesh.login(alice_laptop, user="alice", password="alice-password")
    mesh.login(bob_laptop, user="bob", password="bob-password")
    for host in (alice_laptop, bob_laptop):
        mesh.wait_running(host)
    bob_ip, alice_ip = mesh.address(bob_laptop), mesh.address(alice_laptop)
    # Default policy: another user's laptop is absent and unreachable; the server is shared.
    wait_for(lambda: mesh.peers(alice_laptop) == {"rpi112"}, timeout=15, what="alice sees rpi112")
    assert "bob" not in mesh.peers(alice_laptop) and "alice" not in mesh.peers(bob_laptop)
    assert not ping(alice_laptop, bob_ip)
    mesh.wait_ping(alice_laptop, mesh.address(rpi112))

    grant = """{
      // alice and bob may reach each other's laptops; everyone reaches the servers.
      "acls": [
        {"action": "accept", "src": ["alice@", "bob@"], "dst": ["alice@:*", "bob@:*"]},
        {"action": "accept", "src": ["*"], "dst": ["role:server:*"]},
      ],
    }"""
    changed = time.monotonic()
    mesh.set_policy(grant)
    wait_for(
        lambda: "bob" in mesh.peers(alice_laptop) and "alice" in mesh.peers(bob_laptop),
        timeout=15,
        what="the grant to reach both laptops",
    )
    figure("policy grant seen on both laptops", time.monotonic() - changed)
    mesh.wait_ping(alice_laptop, bob_ip)
    mesh.wait_ping(bob_laptop, alice_ip)

    isolate = """{"acls": [
        {"action": "accept", "src": ["alice@", "bob@"], "dst": ["alice@:*", "bob@:*"]},
    ]}"""
    changed = time.monotonic()
    mesh.set_policy(isolate)
    wait_for(
        lambda: (
            all("rpi112" not in mesh.peers(h) for h in (alice_laptop, bob_laptop))
            and mesh.peers(rpi112) == set()
        ),
        timeout=15,
        what="rpi112 to vanish everywhere",
    )
    figure("isolation seen everywhere", time.monotonic() - changed)
    assert not ping(alice_laptop, mesh.address(rpi112))


def test_auth_keys_single_use_expired_reusable_ephemeral(
    mesh: Mesh, lab: Lab, figure: Figure
) -> None:
    a, b, c, d, watcher = (lab.add_host(n) for n in ("pi-a", "pi-b", "pi-c", "pi-d", "watcher"))
    mesh.join_headless(watcher, mesh.auth_key("admin", role="server"))
    single = mesh.auth_key("admin")
    assert mesh.login(a, key=single).returncode == 0
    second = mesh.login(b, key=single, check=False)
    assert second.returncode != 0 and "already used" in second.stderr + second.stdout
    short = mesh.auth_key("admin", expiration="1s")
    prefix = short.split("_")[1]

    def short_key_expired() -> bool:
        (rec,) = [k for k in mesh.admin_json("auth-keys", "list") if k["prefix"] == prefix]
        return datetime.fromisoformat(rec["expires_at"]) < datetime.now(UTC)

    wait_for(short_key_expired, timeout=10, what="the 1 s key to expire")
    late = mesh.login(b, key=short, check=False)
    assert late.returncode != 0 and "expired" in late.stderr + late.stdout
    reusable = mesh.auth_key("admin", reusable=True)
    assert mesh.login(b, key=reusable).returncode == 0
    assert mesh.login(c, key=reusable).returncode == 0
    ephemeral = mesh.auth_key("admin", ephemeral=True)
    assert mesh.login(d, key=ephemeral).returncode == 0
    wait_for(lambda: "pi-d" in mesh.peers(watcher), timeout=15, what="watcher sees pi-d")
    gone_at = time.monotonic()
    mesh.stop_backend(d)  # the ephemeral device goes offline: its long poll ends
    wait_for(
        lambda: "pi-d" not in mesh.peers(watcher),
        timeout=20,
        what="the offline ephemeral node to be removed",
    )
    figure("ephemeral node removed after going offline", time.monotonic() - gone_at)
    assert "pi-d" not in {n["hostname"] for n in mesh.admin_json("nodes", "list")}


def test_key_rotation_keeps_address_and_tunnel(mesh: Mesh, lab: Lab, figure: Figure) -> None:
    pi, laptop = lab.add_host("rpi112"), lab.add_host("laptop")
    key = mesh.auth_key("admin", reusable=True)
    mesh.join_headless(pi, key)
    mesh.join_headless(laptop, key)
    pi_ip = mesh.address(pi)
    mesh.wait_ping(laptop, pi_ip)
    old_key = mesh.status(pi)["self"]["public_key"]
    rotated = time.monotonic()
    pi.pcloud("rotate-key")
    st = mesh.wait_running(pi)
    assert st["self"]["address"] == pi_ip and st["self"]["public_key"] != old_key
    wait_for(
        lambda: any(
            p["public_key"] == st["self"]["public_key"] for p in mesh.status(laptop)["peers"]
        ),
        timeout=15,
        what="the laptop to learn the new key",
    )
    mesh.wait_ping(laptop, pi_ip)
    figure("rotation -> tunnel back", time.monotonic() - rotated)


def test_admin_removes_node_and_its_tunnels_stop(mesh: Mesh, lab: Lab, figure: Figure) -> None:
    hosts = [lab.add_host(n) for n in ("rpi112", "rpi113", "laptop")]
    key = mesh.auth_key("admin", reusable=True)
    for h in hosts:
        mesh.join_headless(h, key)
    doomed, others = hosts[0], hosts[1:]
    doomed_ip = mesh.address(doomed)
    for h in others:
        mesh.wait_ping(h, doomed_ip)
    removed = time.monotonic()
    mesh.admin("nodes", "delete", str(mesh.node_id("rpi112")))
    wait_for(
        lambda: all("rpi112" not in mesh.peers(h) for h in others),
        timeout=15,
        what="rpi112 gone from every netmap",
    )
    figure("removal seen on every host", time.monotonic() - removed)
    for h in others:
        assert not ping(h, doomed_ip)
    wait_for(
        lambda: mesh.status(doomed)["state"] == "NeedsLogin",
        timeout=15,
        what="the removed device to need a login",
    )


def test_restarts_during_traffic(mesh: Mesh, lab: Lab, figure: Figure) -> None:
    pi, laptop = lab.add_host("rpi112"), lab.add_host("laptop")
    key = mesh.auth_key("admin", reusable=True)
    mesh.join_headless(pi, key)
    mesh.join_headless(laptop, key)
    pi_ip = mesh.address(pi)
    mesh.wait_ping(laptop, pi_ip)
    stream = mesh.ping_stream(laptop, pi_ip, count=40, interval=0.2)
    mesh.stop_backend(pi)  # backend restart: the tunnel is left in place and adopted
    mesh.start_backend(pi, "--headless")
    mesh.wait_running(pi)
    mesh.stop_server()  # coordination-server restart
    mesh.start_server()
    mesh.stop_backend(laptop)  # and both at once
    mesh.stop_server()
    mesh.start_backend(laptop, "--headless")
    mesh.start_server()
    mesh.wait_running(laptop)
    stream.wait(30)
    sent, received = ping_loss(stream)
    figure("echoes answered during three restarts", float(received), f"of {sent}")
    assert sent == 40 and received >= 38, (sent, received)
    mesh.wait_ping(pi, mesh.address(laptop))


def test_server_down_tunnels_keep_working(mesh: Mesh, lab: Lab, figure: Figure) -> None:
    pi, laptop = lab.add_host("rpi112"), lab.add_host("laptop")
    key = mesh.auth_key("admin", reusable=True)
    mesh.join_headless(pi, key)
    mesh.join_headless(laptop, key)
    pi_ip = mesh.address(pi)
    mesh.wait_ping(laptop, pi_ip)
    mesh.stop_server()
    outage = mesh.ping_stream(laptop, pi_ip, count=30, interval=0.2)
    mesh.stop_backend(laptop)  # restart during the outage: restored from the persisted netmap
    mesh.start_backend(laptop, "--headless")
    mesh.wait_running(laptop)
    outage.wait(30)
    sent, received = ping_loss(outage)
    figure("echoes answered with the server down", float(received), f"of {sent}")
    assert received == sent == 30
    assert mesh.status(laptop)["state"] == "Running"
    assert ping(laptop, pi_ip)


def test_endpoint_change_reconverges(mesh: Mesh, lab: Lab, figure: Figure) -> None:
    pi, laptop = lab.add_host("rpi112"), lab.add_host("laptop")
    key = mesh.auth_key("admin", reusable=True)
    mesh.join_headless(pi, key)
    mesh.join_headless(laptop, key)
    pi_ip = mesh.address(pi)
    mesh.wait_ping(laptop, pi_ip)
    moved = time.monotonic()
    pi.set_lan_address("192.168.0.200")
    wait_for(
        lambda: any(
            e.startswith("192.168.0.200:")
            for p in mesh.status(laptop)["peers"]
            if p["hostname"] == "rpi112"
            for e in p["endpoints"]
        ),
        timeout=30,
        what="the laptop to learn rpi112's new endpoint",
    )
    figure("new endpoint reaches the peer", time.monotonic() - moved)
    mesh.wait_ping(laptop, pi_ip, timeout=30)
    figure("move -> ping again", time.monotonic() - moved)


def test_mass_join_twenty_hosts(mesh: Mesh, lab: Lab, figure: Figure) -> None:
    hosts = [lab.add_host(f"node{i:02d}") for i in range(20)]
    key = mesh.auth_key("admin", reusable=True)
    started = time.monotonic()
    for h in hosts:
        key_file = h.path("/etc/pcloud/auth-key")
        key_file.write_text(key + "\n")
        mesh.backends[h.name] = h.spawn(
            "pcloud-backend",
            [
                str(BIN / "pcloud-backend"),
                "--driver",
                "userspace",
                "--hostname",
                h.name,
                "--headless",
                "--server",
                mesh.link,
                "--auth-key-file",
                "/etc/pcloud/auth-key",
            ],
            env=WG_ENV,
        )
    for h in hosts:
        mesh.wait_running(h, timeout=120)
    names = {h.name for h in hosts}
    wait_for(
        lambda: all(mesh.peers(h) == names - {h.name} for h in hosts),
        timeout=60,
        what="every host to see the 19 others",
    )
    figure("20 hosts joined and saw each other", time.monotonic() - started)
    ok, total, failed = mesh.ping_all(hosts, timeout=20)
    figure("pairs answering", float(ok), f"of {total}")
    assert (ok, failed) == (total, [])
    figure("20 hosts: start -> all 380 pairs ping", time.monotonic() - started)
