"""The relay (DESIGN section 9) on the lab's sites: two phones behind endpoint-dependent NATs
reach each other only through rpi111's relay, which sees nothing but WireGuard messages inside
relay frames; a desk whose office drops all UDP goes through the relay's WebSocket on the HTTPS
port; the relay refuses frames from addresses that never registered and between nodes the policy
keeps apart."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from tests.e2e.relay_tools import CAPTURE, dropped, probe, relay_counters
from tests.lab import Lab, wait_for
from tests.lab.home import PUBLIC_URL, headless, peer, public_link
from tests.lab.mesh import Mesh
from tests.lab.sites import HTTPS_PORT, Sites

pytestmark = [pytest.mark.lab, pytest.mark.sites]
Figure = Callable[..., None]
PATTERN = "deadbeefcafef00d0123456789abcdef"  # `ping -p`: fills every echo's payload


def test_relay_between_symmetric_nats(lab: Lab, figure: Figure) -> None:
    rpi111 = lab.add_host("rpi111")
    sites = Sites(lab)
    sites.home(rpi111)
    mesh = Mesh(lab)
    mesh.start_server(rpi111, "--public-url", PUBLIC_URL)
    for user in ("alice", "bob"):
        mesh.create_user(user, user + "-password")  # neither an admin: bob and alice are apart
    link = public_link(mesh)
    phone = sites.add_host("mobile", "phone")
    phone2 = sites.add_host("mobile2", "phone2")
    desk = sites.add_host("office", "desk")
    guest = sites.add_host("cafe", "guest")
    for host, user in ((phone, "alice"), (phone2, "alice"), (desk, "alice"), (guest, "bob")):
        headless(mesh, host, link, mesh.auth_key(user))
    for host in (phone, phone2, desk, guest):
        mesh.wait_running(host)

    # 1. Endpoint-dependent NAT on both sides: no hole punching, the relay carries the pair.
    took = mesh.wait_ping(phone, mesh.address(phone2), timeout=40)
    figure("phone -> phone2 (both symmetric NAT) first ping through the relay", took)
    mesh.wait_ping(phone2, mesh.address(phone), timeout=10)

    def relayed(src: str, dst: str, want: str) -> bool:
        return peer(mesh, lab[src], dst)["path"] == want

    wait_for(lambda: relayed("phone", "phone2", "relay rpi111"), timeout=10, what="phone path")
    wait_for(lambda: relayed("phone2", "phone", "relay rpi111"), timeout=10, what="phone2 path")

    # 3. The office drops all UDP: the desk reaches the phones through the WebSocket relay.
    took = mesh.wait_ping(desk, mesh.address(phone), timeout=40)
    figure("office desk -> phone first ping through the WebSocket relay", took)
    wait_for(lambda: relayed("desk", "phone", "relay rpi111 (tcp)"), timeout=10, what="desk path")
    wait_for(lambda: relayed("phone", "desk", "relay rpi111"), timeout=10, what="phone->desk")

    # 2. A capture on the relaying server while the pair pings with a known payload: only relay
    # frames around WireGuard messages, never the payload.
    cap = rpi111.spawn(
        "capture", [sys.executable, "-c", CAPTURE, "eth0", str(HTTPS_PORT), "6", PATTERN]
    )
    wait_for(lambda: "ready" in cap.log_text(), timeout=10, what="the capture to start")
    ping_argv = ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", "-p", PATTERN]

    def pattern_ping() -> bool:
        # Retried until all three echoes are answered: a direct probe (3 s after the switch to
        # the relay, then every minute) may eat a second of echoes, and ping exits 0 on one
        # reply; the capture below counts the frames of three.
        out = phone.run([*ping_argv, mesh.address(phone2)], check=False)
        answered = " 3 received" in out.stdout
        return bool(out.returncode == 0 and answered and PATTERN[:8] in out.stdout)

    wait_for(pattern_ping, timeout=5, what="pings with the pattern through the relay")
    assert cap.wait(timeout=15) == 0
    summary = __import__("json").loads(cap.log_text().strip().splitlines()[-1])
    print("capture on rpi111:", summary)
    assert summary["udp"] >= 12, summary  # 3 echoes and replies, each in and out of the relay
    assert summary["pattern"] == 0 and summary["other_pattern"] == 0, summary
    assert set(summary["kinds"]) <= {"1", "2", "3", "4"}, summary  # relay frames only
    assert summary["wg"].get("4", 0) >= 12, summary  # WireGuard transport data messages
    assert set(summary["wg"]) <= {"1", "2", "3", "4"}, summary

    # Hostile clients: frames from an address that never registered, and a registered node
    # sending to a node the policy keeps from it, are dropped (and counted).
    phone_key = mesh.status(phone)["self"]["public_key"]
    before = relay_counters(rpi111)
    assert probe(guest, PUBLIC_URL, "unregistered", phone_key, 20) == {"welcomed": False}
    assert probe(guest, PUBLIC_URL, "policy", phone_key, 20) == {"welcomed": True}

    def counted() -> dict[str, float]:
        """The counters once both kinds of hostile frame are counted; else raises with every
        drop reason's increase (a timed-out wait reports it: which reason fell short)."""
        after = relay_counters(rpi111)
        more = {k: v - before.get(k, 0.0) for k, v in after.items() if "dropped" in k}
        if dropped(more, "unregistered") >= 20 and dropped(more, "policy") >= 20:
            return after
        raise AssertionError(f"dropped frames since the probes: {more}")

    after = wait_for(counted, timeout=5, what="the relay to count the hostile frames")
    assert after is not None
    print("relay counters:", after)
    assert guest.name not in {p["hostname"] for p in mesh.status(phone)["peers"]}
