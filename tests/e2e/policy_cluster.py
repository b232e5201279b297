"""Issue 18: policies cannot cut the cluster. Run at the end of the bootstrap scenario, on its
three K3s servers (the stand-in, whose Ready is "answers /ping on NODE_IP:6443 right now" as
seen from rpi111 through the tunnels): the README's example policy is set exactly as the README
shows it, then a one-rule policy (refused with the reason, then forced). K3s nodes stay Ready and
the servers keep reaching each other, on ping and on the K3s port, through the packet filter."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.test_packet_filter import probe
from tests.lab import Host, Lab, wait_for
from tests.lab.mesh import BIN, SERVER_DIR, Mesh

README = Path(__file__).resolve().parents[2] / "README.md"
ONE_RULE = (
    '{"acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}]}'
)


def readme_policy() -> str:
    """The hujson block of the README's Policy section, as a reader would copy it."""
    section = README.read_text().split("## Policy", 1)[1]
    m = re.search(r"```hujson\n(.*?)```", section, re.S)
    assert m, "the README's Policy section has no hujson example"
    return m.group(1)


def admin_policy(server: Host, verb: str, text: str, *flags: str) -> Any:
    server.path("/etc/pcloud/policy.hujson").write_text(text)
    argv = [
        str(BIN / "pcloud-server"),
        "admin",
        "--state-dir",
        SERVER_DIR,
        "policy",
        verb,
        *flags,
        "/etc/pcloud/policy.hujson",
    ]
    return server.run(argv, check=False, timeout=60)


def tcp_open(src: Host, ip: str, port: int) -> bool:
    return probe(src, [(ip, "tcp", port)]) == [True]


def cluster_holds(
    servers: list[Host], addrs: dict[str, str], nodes: Callable[[], list[dict[str, Any]]]
) -> bool:
    ready = all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
        for n in nodes()
    )
    # Ping and the K3s port from each server to the others, one probe process per server.
    reach = all(
        all(
            probe(
                a,
                [
                    (addrs[b.name], kind, 6443)
                    for b in servers
                    if b is not a
                    for kind in ("ping", "tcp")
                ],
            )
        )
        for a in servers
    )
    return ready and reach


def check_policies_keep_cluster(
    mesh: Mesh, lab: Lab, servers: list[Host], nodes: Callable[[], list[dict[str, Any]]]
) -> None:
    server = mesh.server
    assert server is not None
    started = time.monotonic()
    # The README's example needs alice with a device (its `tests` entry has alice@ as source).
    mesh.create_user("alice", "alice-password")
    laptop = lab.add_host("laptop")
    mesh.login(laptop, user="alice", password="alice-password")
    addrs = {h.name: mesh.address(h) for h in servers}

    check = admin_policy(server, "check", readme_policy())
    assert check.returncode == 0, check.stdout + check.stderr
    assert "built in: role:server -> role:server tcp" in check.stdout
    res = admin_policy(server, "set", readme_policy())
    assert res.returncode == 0, res.stdout + res.stderr
    wait_for(
        lambda: cluster_holds(servers, addrs, nodes),
        timeout=30,
        what="K3s Ready and servers reaching each other under the README policy",
    )

    refused = admin_policy(server, "set", ONE_RULE)
    assert refused.returncode != 0
    assert "takes reach away between servers" in refused.stderr, refused.stderr
    assert "--force" in refused.stderr
    forced = admin_policy(server, "set", ONE_RULE, "--force")
    assert forced.returncode == 0, forced.stderr
    # The filters now hold only the built-in rule between servers: still Ready, still reaching.
    for h in servers:
        wait_for(
            lambda h=h: (
                "role:server" in h.pcloud("filter").stdout
                and "default:" not in h.pcloud("filter").stdout
            ),
            timeout=20,
            what=f"{h.name}'s filter under the one-rule policy",
        )
    assert cluster_holds(servers, addrs, nodes)
    # And what the built-in rule does not cover is cut between servers.
    assert not tcp_open(servers[1], addrs[servers[0].name], 22)
    print(
        f"policies vs cluster: README policy and forced one-rule policy, K3s Ready throughout"
        f" ({time.monotonic() - started:.1f} s)\n{servers[0].pcloud('filter').stdout}"
    )
