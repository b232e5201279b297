"""ha-enable and ha-join pieces without a lab: refused below 3 servers naming the count, only
on the server that holds the store; the network CA accepted only if it is the one pinned at
login (its key written 0600); the store flags handed to pcloud-server."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pcloud.backend.config import BackendSettings
from pcloud.backend.control.pinning import ca_fingerprint
from pcloud.backend.ha.member import HaError, store_args, without_store_args
from pcloud.backend.jobs import ha_enable
from pcloud.backend.jobs.runner import JobRunner
from pcloud.backend.server_supervisor import Services
from pcloud.server.protocol import Netmap, Peer
from pcloud.server.security.tls import TlsFiles, ensure_ca
from pcloud.shared.etcd.member import MemberTls


def peer(name: str, n: int, role: str = "server", online: bool = True) -> Peer:
    return Peer(
        node_id=n, hostname=name, user="u", role=role, tags=[], public_key="A" * 43 + "=",
        address=f"10.0.0.{n}", endpoints=[], online=online, last_seen=dt.datetime.now(dt.UTC),
    )  # fmt: skip


def make_ca(where: Path) -> TlsFiles:
    files = TlsFiles.in_dir(where)
    ensure_ca(files)
    return files


@pytest.fixture
def jobs(tmp_path: Path) -> Any:
    settings = BackendSettings(state_dir=tmp_path, hostname="rpi111", system_root=tmp_path)
    services = Services(tmp_path, manager="child")
    pinned = make_ca(tmp_path / "network")
    link = f"https://192.168.0.111:8443/#fp=sha256:{ca_fingerprint(pinned.ca_cert.read_text())}"
    node = SimpleNamespace(address="10.0.0.1", node_token="t", server_url=link)
    backend = SimpleNamespace(
        settings=settings, services=services, node=node, netmap=None, k3s=None, bus=None,
        store=SimpleNamespace(load_ca=lambda: pinned.ca_cert.read_text()),
    )  # fmt: skip
    return SimpleNamespace(
        ha=ha_enable.HaJobs(backend), backend=backend, pinned=pinned, runner=JobRunner(tmp_path)
    )


async def test_enable_refused_with_two_servers_naming_the_count(jobs: Any) -> None:
    jobs.backend.services._save(server_argv=["pcloud-server", "--listen", "1.2.3.4:8443"])
    jobs.backend.netmap = Netmap(
        version=1, full=True, self=peer("rpi111", 1),
        peers=[peer("rpi112", 2), peer("laptop", 4, role="client")],
    )  # fmt: skip
    spec = jobs.ha.enable_spec()
    done = await jobs.runner.run(jobs.runner.create(spec)["id"], spec)
    assert done["state"] == "failed"
    assert "HA needs 3 servers, the network has 2 (rpi111, rpi112)" in done["error"]
    assert [s["state"] for s in done["steps"]][1:] == ["pending"] * 3  # nothing started


async def test_enable_refused_where_no_coordination_server_runs(jobs: Any) -> None:
    spec = jobs.ha.enable_spec()
    done = await jobs.runner.run(jobs.runner.create(spec)["id"], spec)
    assert done["state"] == "failed" and "the first server" in done["error"]


async def test_join_takes_the_pinned_ca_only(
    jobs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_ca(tmp_path / "impostor")
    answers = [
        {"ca_cert": other.ca_cert.read_text(), "ca_key": other.ca_key.read_text()},
        {"ca_cert": jobs.pinned.ca_cert.read_text(), "ca_key": jobs.pinned.ca_key.read_text()},
    ]

    async def call_any(backend: Any, method: str, path: str, **kw: Any) -> Any:
        assert (method, path) == ("GET", "/cluster/ca")
        return answers.pop(0)

    monkeypatch.setattr(ha_enable, "call_any", call_any)
    ctx: Any = SimpleNamespace(params={}, data={})
    key = jobs.backend.services.server_dir / "tls" / "ca.key"
    with pytest.raises(HaError, match="not the one this device pinned"):
        await jobs.ha.network_ca(ctx)
    assert not key.exists()
    detail = await jobs.ha.network_ca(ctx)
    assert "pinned at login" in detail
    assert key.read_text() == jobs.pinned.ca_key.read_text()
    assert key.stat().st_mode & 0o777 == 0o600


def test_store_flags_replace_earlier_ones() -> None:
    tls = MemberTls(Path("/s/tls/ca.pem"), Path("/e/m.pem"), Path("/e/m.key"))
    base = ["python", "-m", "pcloud.server", "--listen", "1.2.3.4:8443"]
    first = base + store_args(["https://10.0.0.1:2479"], tls)
    again = without_store_args(first) + store_args(["https://10.0.0.2:2479", "https://x"], tls)
    assert without_store_args(first) == base
    assert again.count("--store") == 1 and again.count("--etcd-endpoint") == 2
    assert "https://10.0.0.1:2479" not in again
    assert again[again.index("--etcd-key") + 1] == "/e/m.key"
