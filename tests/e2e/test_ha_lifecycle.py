"""The seed's full lifecycle on virtual hosts, only through the real programs: rpi111 bootstraps,
rpi112 and rpi113 join as servers, `pcloud ha enable` (+ `pcloud ha join` on the two others)
moves the state to our etcd, then rpi111 is removed (its URL leaves every netmap's server list)
and demoted (role client, without tag:server). Before the removal, during it
and after it a new device registers through rpi112 and a long poll on rpi113 sees it; tunnels
pinging all along keep passing; and nothing in the store is lost (the migration's digest equals
the SQLite store's, and every record that existed before is still there after, but for the
removed server's own `server:rpi111`)."""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.test_bootstrap import (
    BACKEND_ARGS,
    K3S,
    adopt_server,
    install,
    k3s_wrapper,
    kubectl_nodes,
)
from tests.lab import Host, Lab, wait_for
from tests.lab.mesh import Mesh, ping_loss

pytestmark = pytest.mark.lab
Figure = Callable[..., None]

SERVER_DIR = "/var/lib/pcloud/server"
# Inside a host: the store's fingerprint (counts + SHA-256) and its node/user/key identities,
# from SQLite (argv[1] == "sqlite") or from etcd through this host's member certificate.
FINGERPRINT = """
import json, sys
from dataclasses import asdict
from pcloud.server.store.migrate import fingerprint
if sys.argv[1] == "sqlite":
    from pcloud.server.store.sqlite import SqliteStore
    store = SqliteStore(__import__("pathlib").Path("/var/lib/pcloud/server/pcloud.db"))
else:
    from pathlib import Path
    from pcloud.server.store.etcd import EtcdStore
    name, url = sys.argv[2], sys.argv[3]
    store = EtcdStore([url], ca_file=Path("/var/lib/pcloud/server/tls/ca.pem"),
                      cert_file=Path(f"/var/lib/pcloud/etcd/etcd-{name}.pem"),
                      key_file=Path(f"/var/lib/pcloud/etcd/etcd-{name}.key"), timeout=5.0)
snap = store.load()
ids = {kind: sorted(recs) for kind, recs in snap.records.items()}
nodes = {k: [v.get("address"), v.get("public_key")] for k, v in snap.records["node"].items()}
print(json.dumps({"fp": asdict(fingerprint(snap)), "ids": ids, "nodes": nodes}))
"""


def store_view(host: Host, *args: str) -> dict[str, Any]:
    out = host.run([sys.executable, "-c", FINGERPRINT, *args], timeout=60).stdout
    view: dict[str, Any] = json.loads(out)
    return view


def link_via(mesh: Mesh, host: Host) -> str:
    """The join link with `host`'s coordination server in it (same pinned CA)."""
    assert mesh.server is not None
    return mesh.link.replace(mesh.server.ip, host.ip)


def register_through(mesh: Mesh, device: Host, via: Host, key: str) -> float:
    """`pcloud login` of a new device through `via`'s server; seconds it took."""
    started = time.monotonic()
    mesh.start_backend(device)
    device.run(device.pcloud_argv("login", link_via(mesh, via), "--auth-key", key), timeout=60)
    mesh.wait_running(device)
    return time.monotonic() - started


def job_result(output: str, pattern: str) -> str:
    m = re.search(pattern, output)
    assert m, output
    return m.group(1)


def test_ha_lifecycle_enable_remove_and_demote_the_first_server(lab: Lab, figure: Figure) -> None:
    rpi111, rpi112, rpi113 = (lab.add_host(n) for n in ("rpi111", "rpi112", "rpi113"))
    watcher, laptop = lab.add_host("watcher"), lab.add_host("laptop")
    mesh = Mesh(lab)
    for host in (rpi111, rpi112, rpi113):
        k3s_wrapper(host)
        mesh.start_backend(host, *BACKEND_ARGS)
    adopt_server(mesh, rpi111, install(rpi111).stdout)
    key = mesh.auth_key("admin", reusable=True)
    server_key = mesh.auth_key("admin", role="server", reusable=True)
    for host in (rpi112, rpi113):
        mesh.login(host, key=key)
        mesh.wait_running(host)
        host.run(host.pcloud_argv("join-server", "--auth-key", server_key, "--k3s-binary", K3S),
                 timeout=180)  # fmt: skip
    mesh.login(laptop, key=key)
    mesh.wait_running(laptop)
    # Tunnels that must keep passing through everything below.
    pings = [mesh.ping_stream(laptop, mesh.address(h), count=100000, interval=0.2)
             for h in (rpi112, rpi113)]  # fmt: skip

    # -- ha enable on the first server, ha join on the two others --------------------------
    started = time.monotonic()
    enabled = rpi111.pcloud("ha", "enable", timeout=180).stdout
    figure("ha enable (etcd member, checked migration, server on etcd)", time.monotonic() - started)
    assert "✓ state moved to etcd" in enabled, enabled
    digest = job_result(enabled, r"sha256 ([0-9a-f]{16}) checked")
    # Nothing lost in the move: SQLite (untouched since the copy) has the digest the job checked.
    before = store_view(rpi111, "sqlite")
    assert before["fp"]["digest"].startswith(digest)
    for host in (rpi112, rpi113):
        started = time.monotonic()
        out = host.pcloud("ha", "join", timeout=180).stdout
        figure(f"ha join {host.name}", time.monotonic() - started)
        assert f"https://{host.ip}:8443" in out, out
    rpi113_link = link_via(mesh, rpi113)
    mesh.start_backend(watcher)
    # rpi113's coordination server has just started on the shared store: under load it may
    # take a moment to answer, so the first login is retried until it does (and says why not).
    def watcher_login() -> bool:
        res = watcher.run(watcher.pcloud_argv("login", rpi113_link, "--auth-key", key),
                          check=False, timeout=60)  # fmt: skip
        if res.returncode != 0:
            raise AssertionError(f"login failed: {res.stderr.strip() or res.stdout.strip()}")
        return True

    wait_for(watcher_login, timeout=60, what="the watcher's login through rpi113")
    mesh.wait_running(watcher)

    def watcher_sees(name: str) -> float:
        started = time.monotonic()
        wait_for(lambda: name in mesh.peers(watcher), timeout=15,
                 what=f"the watcher (long poll on rpi113) to see {name}")  # fmt: skip
        return time.monotonic() - started

    # -- before the removal ----------------------------------------------------------------
    dev1 = lab.add_host("dev1")
    figure("register via rpi112 (before)", register_through(mesh, dev1, rpi112, key))
    figure("seen on rpi113 (before)", watcher_sees("dev1"))

    # -- during: remove-server --demote on rpi111 while dev2 registers through rpi112 -------
    started = time.monotonic()
    removal = rpi111.spawn("remove-server", rpi111.pcloud_argv("remove-server", "--demote"))
    dev2 = lab.add_host("dev2")
    figure("register via rpi112 (during)", register_through(mesh, dev2, rpi112, key))
    figure("seen on rpi113 (during)", watcher_sees("dev2"))
    assert removal.wait(240) == 0, removal.log_text()
    figure("remove-server --demote", time.monotonic() - started)
    for step in ("quorum", "drained", "K3s node deleted", "left our etcd",
                 "coordination server stopped", "K3s uninstalled", "demoted"):  # fmt: skip
        assert f"✓ {step}" in removal.log_text(), removal.log_text()

    # -- after ------------------------------------------------------------------------------
    dev3 = lab.add_host("dev3")
    figure("register via rpi112 (after)", register_through(mesh, dev3, rpi112, key))
    figure("seen on rpi113 (after)", watcher_sees("dev3"))
    me = mesh.status(rpi111)["self"]
    assert (me["role"], me["address"]) == ("client", "10.0.0.1")
    assert "tag:server" not in me["tags"], me  # a client no longer owned by the servers' tag
    # The removed server withdrew its record: the netmap rpi113 follows lists only the others.
    def rpi113_servers() -> list[str]:
        netmap = json.loads(rpi113.path("/var/lib/pcloud/netmap.json").read_text())
        return list(netmap["servers"])

    def rpi111_unlisted() -> bool:
        return not any(rpi111.ip in url for url in rpi113_servers())

    wait_for(rpi111_unlisted, timeout=15, what="rpi113's netmap servers to drop rpi111")
    assert {f"https://{h.ip}:8443" for h in (rpi112, rpi113)} <= set(rpi113_servers())
    assert {n["metadata"]["name"] for n in kubectl_nodes(rpi112)} == {"rpi112", "rpi113"}
    after = store_view(rpi112, "etcd", "rpi112", f"https://{mesh.address(rpi112)}:2479")
    # Every record kept, but for the removed server's own (withdrawn on purpose).
    assert "server:rpi111" in before["ids"]["meta"]
    assert "server:rpi111" not in after["ids"]["meta"]
    for kind, ids in before["ids"].items():
        assert set(ids) - {"server:rpi111"} <= set(after["ids"][kind]), kind
    for node_id, identity in before["nodes"].items():
        assert after["nodes"][node_id] == identity
    ok, total, failed = mesh.ping_all([rpi111, rpi112, rpi113, laptop, dev3])
    assert ok == total, failed
    for proc in pings:
        proc.signal(signal.SIGINT)  # ping prints its summary on SIGINT
        proc.wait(10)
        sent, received = ping_loss(proc)
        figure("pings laptop->server kept through all", received / sent * 100, "%")
        assert received >= sent - 10, (sent, received)  # at most ~2 s of loss in all of it
