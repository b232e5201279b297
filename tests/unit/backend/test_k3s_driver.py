"""The K3s driver's commands, files and modes, with a runner that records instead of running."""

from __future__ import annotations

import hashlib
import json
import logging
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import pytest

from pcloud.backend.k3s import flags, install
from pcloud.backend.k3s.driver import K3sDriver, K3sError
from pcloud.backend.services.runner import Result, redact

NODES_JSON = {
    "items": [
        {
            "metadata": {
                "name": "rpi111",
                "labels": {"node-role.kubernetes.io/control-plane": "true"},
            },
            "spec": {},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        },
        {
            "metadata": {"name": "rpi112", "labels": {}},
            "spec": {"unschedulable": True},
            "status": {"addresses": [], "conditions": [{"type": "Ready", "status": "False"}]},
        },
    ]
}


class Recorder:
    """A Runner that records argv and env and answers from a script."""

    def __init__(self, answers: Mapping[str, Result] | None = None) -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []
        self.spawned: list[list[str]] = []
        self.answers = dict(answers or {})

    async def run(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 60.0
    ) -> Result:
        self.calls.append((list(argv), dict(env or {})))
        key = " ".join(argv[1:3])
        return self.answers.get(key, Result(list(argv), 0, "", ""))

    def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, log_path: str
    ) -> int:
        self.spawned.append(list(argv))
        return 2**22 + 12345  # a PID nobody has; the supervisor sees it gone at once


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def fake_k3s(tmp_path: Path) -> Path:
    p = tmp_path / "dist" / "k3s"
    p.parent.mkdir()
    p.write_bytes(b"#!/bin/sh\necho k3s\n")
    return p


def test_install_given_binary_is_idempotent_and_verified(tmp_path: Path, fake_k3s: Path) -> None:
    import asyncio

    d = K3sDriver(tmp_path / "root", Recorder(), binary=fake_k3s, use_systemd=False)
    digest = hashlib.sha256(fake_k3s.read_bytes()).hexdigest()
    assert asyncio.run(d.install(sha256=digest)) is True
    assert d.paths.binary.read_bytes() == fake_k3s.read_bytes()
    assert mode(d.paths.binary) == 0o755
    assert asyncio.run(d.install()) is False  # same file: nothing to do
    with pytest.raises(K3sError, match="expected"):
        asyncio.run(d.install(sha256="0" * 64))


async def test_pinned_download_checks_the_hash(tmp_path: Path) -> None:
    body = b"pretend k3s"
    transport = httpx.MockTransport(lambda req: httpx.Response(200, content=body))
    dest = tmp_path / "bin/k3s"
    good = {"k3s": hashlib.sha256(body).hexdigest()}
    assert await install.install_pinned(dest, pinned=good, machine="x86_64", transport=transport)
    assert dest.read_bytes() == body
    dest.unlink()
    bad = {"k3s": "1" * 64}
    with pytest.raises(install.InstallError, match="pinned"):
        await install.install_pinned(dest, pinned=bad, machine="x86_64", transport=transport)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no half download left behind
    with pytest.raises(install.InstallError, match="--k3s-binary"):
        await install.install_pinned(dest, pinned={}, machine="x86_64", transport=transport)


def test_token_file_is_0600_generated_once_and_never_replaced(tmp_path: Path) -> None:
    d = K3sDriver(tmp_path, Recorder(), use_systemd=False)
    assert d.ensure_token() is True
    first = d.paths.token_file.read_text()
    assert mode(d.paths.token_file) == 0o600
    assert len(first.strip()) == 32
    assert d.ensure_token() is False
    assert d.paths.token_file.read_text() == first
    joined = "K10" + "a" * 64 + "::server:secret"
    d2 = K3sDriver(tmp_path / "two", Recorder(), use_systemd=False)
    assert d2.ensure_token(joined) is True
    assert d2.ensure_token(joined) is False
    with pytest.raises(K3sError, match="hash length"):
        d2.ensure_token("K10abc::server:x")


def test_join_token_is_the_full_k10_form(tmp_path: Path) -> None:
    d = K3sDriver(tmp_path, Recorder(), use_systemd=False)
    with pytest.raises(K3sError, match="start the server"):
        d.join_token()
    d.ensure_token("s3cret")
    d.paths.server_ca.parent.mkdir(parents=True)
    d.paths.server_ca.write_bytes(b"CA PEM")
    assert d.join_token() == f"K10{hashlib.sha256(b'CA PEM').hexdigest()}::server:s3cret"
    d.paths.server_token.write_text("K10" + "b" * 64 + "::server:fromk3s\n")
    assert d.join_token() == "K10" + "b" * 64 + "::server:fromk3s"


def test_config_file_is_rooted_0600_and_rewritten_only_on_change(tmp_path: Path) -> None:
    d = K3sDriver(tmp_path, Recorder(), use_systemd=False)
    cfg = d.node_config(
        node_ip="10.0.0.1", node_name="rpi111", flannel_iface="pcloud0", cluster_init=True
    )
    assert d.write_config(cfg) is True
    assert d.paths.config == tmp_path / "etc/rancher/k3s/config.yaml"
    assert mode(d.paths.config) == 0o600
    text = d.paths.config.read_text()
    assert f'token-file: "{tmp_path}/etc/rancher/k3s/pcloud-token"' in text
    assert f'data-dir: "{tmp_path}/var/lib/rancher/k3s"' in text
    assert d.write_config(cfg) is False
    cfg.extra = {"no-deploy": ["traefik"]}
    with pytest.raises(K3sError, match="no-deploy"):
        d.write_config(cfg)


async def test_start_runs_server_with_only_the_config_path(tmp_path: Path) -> None:
    rec = Recorder()
    d = K3sDriver(tmp_path, rec, use_systemd=False)
    with pytest.raises(K3sError, match="not installed"):
        await d.start()
    d.paths.binary.parent.mkdir(parents=True)
    d.paths.binary.write_text("")
    d.write_config(d.node_config(node_ip="10.0.0.1", node_name="n", flannel_iface="wg0"))
    await d.start()
    assert rec.spawned == [[str(d.paths.binary), "server", f"--config={d.paths.config}"]]
    assert d.paths.pid_file.read_text().split()[0] == str(2**22 + 12345)
    await d.stop()
    assert not d.paths.pid_file.exists()


async def test_start_refuses_an_old_config_with_a_removed_key(tmp_path: Path) -> None:
    d = K3sDriver(tmp_path, Recorder(), use_systemd=False)
    d.paths.binary.parent.mkdir(parents=True)
    d.paths.binary.write_text("")
    d.paths.config.parent.mkdir(parents=True)
    d.paths.config.write_text("no-deploy:\n  - traefik\n")  # what the seed's era wrote
    with pytest.raises(K3sError, match="no-deploy"):
        await d.start()


async def test_systemd_unit_and_systemctl_calls(tmp_path: Path) -> None:
    rec = Recorder()
    d = K3sDriver(tmp_path, rec, use_systemd=True)
    d.paths.binary.parent.mkdir(parents=True)
    d.paths.binary.write_text("")
    d.write_config(d.node_config(node_ip="10.0.0.1", node_name="n", flannel_iface="wg0"))
    await d.start()
    unit = (tmp_path / "etc/systemd/system/k3s.service").read_text()
    assert f"ExecStart={d.paths.binary} server --config={d.paths.config}\n" in unit
    digest = hashlib.sha256(d.paths.config.read_bytes()).hexdigest()
    assert f"Environment=PCLOUD_K3S_CONFIG_SHA256={digest}\n" in unit
    assert "Type=notify" in unit and "KillMode=process" in unit and "Restart=always" in unit
    assert [c[0] for c in rec.calls] == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "k3s"],
        ["systemctl", "restart", "k3s"],
    ]
    rec.calls.clear()
    await d.start()  # unchanged unit: just make sure it runs
    assert [c[0] for c in rec.calls] == [
        ["systemctl", "enable", "k3s"],
        ["systemctl", "start", "k3s"],
    ]
    rec.calls.clear()
    # A changed config changes the unit, so K3s restarts and reads it.
    d.write_config(d.node_config(node_ip="10.0.0.1", node_name="n2", flannel_iface="wg0"))
    await d.start()
    assert ["systemctl", "restart", "k3s"] in [c[0] for c in rec.calls]


async def test_cluster_commands(tmp_path: Path) -> None:
    nodes = Result([], 0, json.dumps(NODES_JSON), "")
    rec = Recorder({"kubectl get": nodes})
    d = K3sDriver(tmp_path, rec, use_systemd=False)
    listed = await d.nodes()
    assert [(n.name, n.ready, n.internal_ip, n.unschedulable) for n in listed] == [
        ("rpi111", True, "10.0.0.1", False),
        ("rpi112", False, None, True),
    ]
    assert listed[0].roles == ["control-plane"]
    await d.drain("rpi112", timeout=120)
    await d.delete_node("rpi112")
    await d.snapshot("before-remove")
    k3s = str(d.paths.binary)
    assert [c[0] for c in rec.calls] == [
        [k3s, "kubectl", "get", "nodes", "-o", "json"],
        [
            k3s,
            "kubectl",
            "drain",
            "rpi112",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=120s",
        ],
        [k3s, "kubectl", "delete", "node", "rpi112"],
        [k3s, "etcd-snapshot", "save", f"--config={d.paths.config}", "--name=before-remove"],
    ]
    # kubectl must find the kubeconfig under the root, not /etc/rancher/k3s/k3s.yaml.
    assert all(env == {"KUBECONFIG": str(d.paths.kubeconfig)} for _, env in rec.calls)
    flags.validate_argv("etcd-snapshot save", rec.calls[3][0][3:])


async def test_failed_kubectl_is_an_error_without_secrets(tmp_path: Path) -> None:
    rec = Recorder({"kubectl delete": Result([], 1, "", 'nodes "x" not found')})
    d = K3sDriver(tmp_path, rec, use_systemd=False)
    with pytest.raises(K3sError, match="not found"):
        await d.delete_node("x")


def test_redact_hides_token_values() -> None:
    assert redact(["k3s", "server", "--token=abc", "-t", "def", "--token-file=/f"]) == [
        "k3s",
        "server",
        "--token=***",
        "-t",
        "***",
        "--token-file=/f",
    ]


async def test_token_never_reaches_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rec = Recorder()
    d = K3sDriver(tmp_path, rec, use_systemd=False)
    d.paths.binary.parent.mkdir(parents=True)
    d.paths.binary.write_text("")
    d.ensure_token()
    secret = d.paths.token_file.read_text().strip()
    cfg = d.node_config(node_ip="10.0.0.1", node_name="n", flannel_iface="wg0", cluster_init=True)
    d.write_config(cfg)
    await d.start()
    await d.stop()
    joiner = K3sDriver(tmp_path / "j", rec, use_systemd=False)
    joiner.ensure_token(f"K10{'c' * 64}::server:{secret}")
    assert secret not in caplog.text
    assert secret not in d.paths.config.read_text()
    assert all(secret not in " ".join(argv) for argv in rec.spawned)
    assert caplog.text  # something was logged, so the check above means something
