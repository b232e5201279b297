"""The policy on the wire (issue 15): packets get through exactly when the policy says so.

A lab of five hosts (two servers with tags, two users' laptops, a tagged CI box) runs listeners
on tcp 22/80/443/8080 and udp 53/5353. Under a policy with ports and protocols, every ordered
pair of hosts probes each of those and ping; each answer must equal what `POST /acl/check`
says for the same pair as a policy `tests` entry. Then a policy change must stop an open TCP
connection and open a new port within the fan-out time, the filter must come back from the
persisted netmap when a backend restarts with the coordination server down, and `pcloud down`
must take our table away. The root namespace's nftables tables never change.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import httpx
import pytest

from tests.lab import Lab, wait_for
from tests.lab.host import Host
from tests.lab.mesh import BIN, SERVER_DIR, Mesh
from tests.lab.process import Proc

pytestmark = pytest.mark.lab
Figure = Callable[..., None]

TCP_PORTS = (22, 80, 443, 8080)
UDP_PORTS = (53, 5353)
PROBES: tuple[tuple[str, int], ...] = (
    *(("tcp", p) for p in TCP_PORTS),
    *(("udp", p) for p in UDP_PORTS),
    ("ping", 0),
)

POLICY = """{
  "groups": {"group:ops": ["alice@"]},
  "tagOwners": {"tag:server": ["group:ops"], "tag:dns": ["group:ops"], "tag:ci": ["group:ops"]},
  "acls": [
    {"action": "accept", "src": ["group:ops"], "proto": "tcp",
     "dst": ["tag:server:22,443", "tag:dns:22"]},
    {"action": "accept", "src": ["bob@"], "proto": "tcp", "dst": ["tag:server:443"]},
    {"action": "accept", "src": ["autogroup:member", "tag:ci"], "proto": "udp",
     "dst": ["tag:dns:53"]},
    {"action": "accept", "src": ["group:ops"], "proto": "icmp", "dst": ["*:*"]},
    {"action": "accept", "src": ["tag:server"], "dst": ["tag:ci:8080"]},
  ],
}"""


def root_tables() -> str:
    out = subprocess.run(["nft", "-j", "list", "tables"], capture_output=True, text=True)
    return out.stdout


@pytest.fixture(autouse=True)
def root_namespace_untouched() -> Iterator[None]:
    before = root_tables()
    yield
    assert root_tables() == before, "a test changed the root namespace's nftables tables"


def admin_api(server: Host) -> httpx.Client:
    """The coordination server's admin socket, reached from the test process by its path (a
    Unix socket needs no network): no CLI start-up in the timings."""
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(server.path(f"{SERVER_DIR}/admin.sock"))),
        base_url="http://admin",
    )


def put_policy(server: Host, text: str, *, force: bool) -> httpx.Response:
    with admin_api(server) as c:
        return c.put(
            "/api/v1/acl",
            content=text,
            headers={"content-type": "application/hujson"},
            params={"force": "true"} if force else None,
        )


def check_policy(server: Host, text: str) -> dict[str, Any]:
    with admin_api(server) as c:
        answer: dict[str, Any] = c.post(
            "/api/v1/acl/check", content=text, headers={"content-type": "application/hujson"}
        ).json()
    return answer


def local_get(host: Host, path: str) -> dict[str, Any]:
    """A GET on the host's backend socket, from the test process (no CLI start-up)."""
    sock = str(host.path("/run/pcloud/backend.sock"))
    with httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://local") as c:
        data: dict[str, Any] = c.get(path).json()
    return data


def filter_of(host: Host) -> dict[str, Any]:
    """`GET /v1/filter` (what `pcloud filter --json` prints)."""
    return local_get(host, "/v1/filter")


def whys(host: Host) -> set[str]:
    return {r["why"] for r in filter_of(host)["detail"]}


def paths(host: Host) -> dict[str, str | None]:
    """Peer hostname -> the path `pcloud status` shows (`direct IP:PORT`, `relay rpi111`...)."""
    return {p["hostname"]: p.get("path") for p in local_get(host, "/v1/status")["peers"]}


def direct_to_all(host: Host) -> bool:
    """True once `host` has a direct path to every peer the policy gives it; else raises with
    the paths seen (a timed-out wait reports its last exception)."""
    now = paths(host)
    if now and all((p or "").startswith("direct ") for p in now.values()):
        return True
    raise AssertionError(f"{host.name}'s paths: {now}")


def bound_or_gone(listener: Proc) -> bool:
    """The `probes listen` process has bound every socket, or has exited."""
    return "listening" in listener.log_text() or not listener.alive


def probe(host: Host, items: list[tuple[str, str, int]]) -> list[bool]:
    argv = [sys.executable, "-m", "tests.lab.probes", "probe", json.dumps(items)]
    answer: list[bool] = json.loads(host.run(argv, timeout=30).stdout)
    return answer


def oracle(
    server: Host, hosts: list[Host], addrs: dict[str, str]
) -> dict[tuple[str, str, str, int], bool]:
    """What the policy says for every probe, from `POST /acl/check`'s `tests` answers."""
    doc = json.loads(re.sub(r",(\s*[}\]])", r"\1", POLICY))  # our own text: plain JSON
    doc["hosts"] = {f"h-{name}": ip for name, ip in addrs.items()}
    keys, tests = [], []
    for src in hosts:
        for dst in hosts:
            if src is dst:
                continue
            for kind, port in PROBES:
                keys.append((src.name, dst.name, kind, port))
                proto = "icmp" if kind == "ping" else kind
                tests.append(
                    {
                        "src": f"h-{src.name}",
                        "proto": proto,
                        "accept": [f"h-{dst.name}:{port or 1}"],
                    }
                )
    doc["tests"] = tests
    answer = check_policy(server, json.dumps(doc))
    assert len(answer["tests"]) == len(keys), answer.get("errors")
    return {k: t["passed"] for k, t in zip(keys, answer["tests"], strict=True)}


def test_policy_ports_hold_on_the_wire(mesh: Mesh, lab: Lab, figure: Figure) -> None:
    rpi111 = mesh.server
    assert rpi111 is not None
    rpi112, alice, bob, ci = (lab.add_host(n) for n in ("rpi112", "alice", "bob", "ci"))
    hosts = [rpi111, rpi112, alice, bob, ci]
    mesh.create_user("alice", "alice-password")
    mesh.create_user("bob", "bob-password")
    mesh.join_headless(rpi111, mesh.auth_key("admin", role="server", tags="tag:server"))
    mesh.join_headless(rpi112, mesh.auth_key("admin", role="server", tags="tag:dns"))
    mesh.join_headless(ci, mesh.auth_key("admin", tags="tag:ci"))
    mesh.login(alice, user="alice", password="alice-password")
    mesh.login(bob, user="bob", password="bob-password")
    running = {
        h.name: wait_for(
            lambda h=h: (st := local_get(h, "/v1/status"))["state"] == "Running" and st,
            timeout=30,
            what=f"{h.name} Running",
        )
        for h in hosts
    }
    addrs = {name: st["self"]["address"] for name, st in running.items()}
    # On the overlay address, as a service for the network binds: every backend's resolver
    # holds port 53 on a loopback address, so a wildcard bind of udp 53 is refused.
    listeners = [
        h.spawn(
            "listen",
            [
                sys.executable,
                "-m",
                "tests.lab.probes",
                "listen",
                ",".join(map(str, TCP_PORTS)),
                ",".join(map(str, UDP_PORTS)),
                addrs[h.name],
            ],
        )
        for h in hosts
    ]
    for p in listeners:
        # A listener that cannot bind must fail here, not as policy-vs-wire disagreements.
        wait_for(partial(bound_or_gone, p), timeout=10, what=f"{p} listening")
        assert p.alive, p.log_text(tail=5)
    for h in hosts:
        wait_for(
            lambda h=h: filter_of(h)["state"] == "in_force",
            timeout=20,
            what=f"{h.name}'s packet filter",
        )

    # Servers would lose reach to each other: refused, with the reason, unless forced (the
    # admin CLI as an admin types it).
    rpi111.path("/etc/pcloud/policy.hujson").write_text(POLICY)
    cli = [
        str(BIN / "pcloud-server"),
        "admin",
        "--state-dir",
        SERVER_DIR,
        "policy",
        "set",
        "/etc/pcloud/policy.hujson",
    ]
    refused = rpi111.run(cli, check=False)
    assert refused.returncode != 0 and "takes reach away between servers" in refused.stderr
    assert "--force" in refused.stderr
    rpi111.run([*cli, "--force"])
    wait_for(lambda: "acls[0]" in whys(rpi111), timeout=20, what="rpi111's new filter")
    wait_for(
        lambda: all(not any(w.startswith("default") for w in whys(h)) for h in hosts),
        timeout=20,
        what="no host to keep a default-policy rule",
    )

    # The grid judges the filter, so every probe must meet a settled path: on this flat LAN
    # each host has a direct WireGuard session with every peer (its keepalives shake hands at
    # once). A probe waits 0.8 s, less than a first handshake can take on a loaded host (CI
    # lost alice -> bob's one ping so, twice); a pair that never goes direct fails here, by
    # name and with every path, not as a disagreement.
    settling = time.monotonic()
    for h in hosts:
        wait_for(
            partial(direct_to_all, h),
            timeout=30,
            what=f"{h.name}: a direct path to every peer",
        )
    print(f"paths settled {time.monotonic() - settling:.1f} s after the policy took effect")

    expected = oracle(rpi111, hosts, addrs)
    started = time.monotonic()

    def from_src(src: Host) -> list[tuple[tuple[str, str, str, int], bool]]:
        keys = [k for k in expected if k[0] == src.name]
        got = probe(src, [(addrs[k[1]], k[2], k[3]) for k in keys])
        return list(zip(keys, got, strict=True))

    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        seen = dict(x for part in pool.map(from_src, hosts) for x in part)
    elapsed = time.monotonic() - started
    wrong = sorted(k for k in expected if seen[k] != expected[k])
    allowed = sum(expected.values())
    print(
        f"grid: {len(expected)} probes, {allowed} allowed by the policy, "
        f"{len(wrong)} disagreements, {elapsed:.1f} s"
    )
    figure("grid probes (policy vs wire)", len(expected), "probes")
    figure("grid disagreements", len(wrong), "count")
    assert wrong == [], [(k, "policy", expected[k], "wire", seen[k]) for k in wrong]
    # The grid is not trivially all-open or all-closed.
    assert 10 < allowed < len(expected) - 10

    # A policy change: alice's open connection to rpi111:22 stops, rpi111:8080 opens.
    watcher = alice.spawn(
        "watch", [sys.executable, "-m", "tests.lab.probes", "watch", addrs["rpi111"], "22", "8080"]
    )
    wait_for(lambda: "connected" in watcher.log_text(), timeout=10, what="the watched connection")
    changed = POLICY.replace('"tag:server:22,443"', '"tag:server:443,8080"')
    t0 = time.monotonic()
    assert put_policy(rpi111, changed, force=True).status_code == 200
    t_put = time.monotonic() - t0
    times = wait_for(
        lambda: (
            (m := dict(re.findall(r"(cut|open) ([0-9.]+)", watcher.log_text())))
            and len(m) == 2
            and m
        ),
        timeout=15,
        what="the open connection cut and the new port open",
    )
    cut, opened = float(times["cut"]) - t0, float(times["open"]) - t0
    print(
        f"policy change: PUT /acl took {t_put:.2f} s; open connection cut after {cut:.2f} s,"
        f" new port open after {opened:.2f} s (from the PUT's start)"
    )
    figure("policy change -> open TCP connection cut", cut)
    figure("policy change -> new port open", opened)
    assert cut < 5 and opened < 5  # the < 1 s target is a figure, not a timed assertion

    # Backend restart with the coordination server down: the filter comes back from disk.
    mesh.stop_server()
    mesh.stop_backend(rpi111)
    rpi111.run(["nft", "delete", "table", "inet", "pcloud"])  # prove it is rebuilt, not kept
    mesh.start_backend(rpi111)
    wait_for(
        lambda: filter_of(rpi111)["state"] == "in_force",
        timeout=20,
        what="rpi111's filter after the restart",
    )
    assert "acls[0]" in whys(rpi111)
    assert "pcloud" in rpi111.run(["nft", "list", "tables"]).stdout
    got = probe(
        alice,
        [
            (addrs["rpi111"], "tcp", 8080),
            (addrs["rpi111"], "tcp", 22),
            (addrs["rpi111"], "tcp", 80),
        ],
    )
    assert got == [True, False, False]

    # `pcloud down` takes our table away; nothing else in the host's nftables is touched.
    bob.run(["nft", "add", "table", "ip", "someone_else"])
    bob.pcloud("down")
    tables = bob.run(["nft", "list", "tables"]).stdout
    assert "pcloud" not in tables and "table ip someone_else" in tables
