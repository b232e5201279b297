"""The K3s driver against the stand-in `k3s` on loopback: first server, joins, refusals.

Two "machines" are two roots on one host; the first server listens on 127.0.0.1 and joiners on
127.0.0.2/127.0.0.3 (all loopback), each on its own port. Across the real WireGuard mesh the
same code runs in the lab with node IPs 10.0.0.x.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pcloud.backend.k3s.driver import K3sDriver, K3sError
from tests.support.k3s_standin import argv, env, write_wrapper
from tests.support.k3s_standin.cluster import client_ssl
from tests.support.ports import free_port

FIRST_IP, SECOND_IP, THIRD_IP = "127.0.0.1", "127.0.0.2", "127.0.0.3"


class Lab:
    """Drivers for several roots sharing one stand-in binary; everything stopped at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.wrapper = write_wrapper(tmp / "dist" / "k3s")
        self.drivers: list[K3sDriver] = []

    def driver(self, name: str) -> K3sDriver:
        d = K3sDriver(self.tmp / name, binary=self.wrapper, use_systemd=False)
        self.drivers.append(d)
        return d

    async def first_server(self) -> tuple[K3sDriver, str, int]:
        d = self.driver("rpi111")
        await d.install()
        port = free_port(FIRST_IP)
        cfg = d.node_config(
            node_ip=FIRST_IP,
            node_name="rpi111",
            flannel_iface="lo",
            cluster_init=True,
            https_listen_port=port,
        )
        join_token = await d.init_server(cfg, timeout=30)
        return d, join_token, port

    def logs(self) -> str:
        out = []
        for d in self.drivers:
            if d.paths.log_file.exists():
                out.append(d.paths.log_file.read_text())
        return "\n".join(out)


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        for d in lab.drivers:
            await d.stop()


async def test_first_server_then_join_over_its_address(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first, join_token, port = await lab.first_server()
    secret = first.paths.token_file.read_text().strip()
    assert join_token.startswith("K10") and join_token.endswith(f"::server:{secret}")
    ca_pem = first.paths.server_ca.read_bytes()
    # The API answers on NODE_IP:PORT with a certificate from the cluster CA, naming the IP.
    async with httpx.AsyncClient(verify=client_ssl(ca_pem)) as c:
        assert (await c.get(f"https://{FIRST_IP}:{port}/ping")).text == "pong"
    kubeconfig = first.paths.kubeconfig
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o640  # the mode our config asked for

    second = lab.driver("rpi112")
    await second.install()
    cfg = second.node_config(
        node_ip=SECOND_IP,
        node_name="rpi112",
        flannel_iface="lo",
        server_url=f"https://{FIRST_IP}:{port}",
        https_listen_port=free_port(SECOND_IP),
    )
    node = await second.join(cfg, join_token, timeout=30)
    assert (node.name, node.ready, node.internal_ip) == ("rpi112", True, SECOND_IP)
    assert "control-plane" in node.roles

    # Both servers see both nodes, with the joiner's source address.
    for d in (first, second):
        listed = {n.name: n for n in await d.nodes()}
        assert set(listed) == {"rpi111", "rpi112"}
        assert listed["rpi112"].internal_ip == SECOND_IP
    members = (first.paths.data_dir / "server/members.json").read_text()
    assert f'"source": "{SECOND_IP}"' in members
    # The joiner has the cluster CA: its own token pins the same CA.
    assert second.join_token().split("::")[0] == join_token.split("::")[0]

    # Drain and delete the joiner from the first server; a snapshot works on a server.
    assert "saved" in await first.snapshot("before-remove")
    await first.drain("rpi112")
    assert [n.unschedulable for n in await second.nodes() if n.name == "rpi112"] == [True]
    await first.delete_node("rpi112")
    assert [n.name for n in await first.nodes()] == ["rpi111"]
    with pytest.raises(K3sError, match="not found"):
        await first.delete_node("rpi112")

    # A stopped node shows NotReady.
    await second.stop()
    await second.join(cfg, join_token, timeout=30)  # rejoin: back in the list
    await second.stop()
    states = {n.name: n.ready for n in await first.nodes()}
    assert states == {"rpi111": True, "rpi112": False}

    # The secret is in no log: ours, K3s's (the stand-in's) or the config.
    assert secret not in caplog.text
    assert secret not in lab.logs()
    assert secret not in first.paths.config.read_text()


async def test_wrong_token_is_refused(lab: Lab) -> None:
    _, join_token, port = await lab.first_server()
    intruder = lab.driver("intruder")
    await intruder.install()
    cfg = intruder.node_config(
        node_ip=THIRD_IP,
        node_name="intruder",
        flannel_iface="lo",
        server_url=f"https://{FIRST_IP}:{port}",
        https_listen_port=free_port(THIRD_IP),
    )
    # Right CA hash, wrong password.
    wrong = join_token.rsplit(":", 1)[0] + ":not-the-secret"
    with pytest.raises(K3sError, match="token is not valid"):
        await intruder.join(cfg, wrong, timeout=30)
    await intruder.stop()
    # A token pinning another CA is refused before any secret is sent.
    other_ca = "K10" + "0" * 64 + "::server:" + join_token.rsplit(":", 1)[1]
    with pytest.raises(K3sError, match="CA hash does not match"):
        await intruder.join(cfg, other_ca, timeout=30)
    names = [n.name for n in await lab.drivers[0].nodes()]
    assert names == ["rpi111"]


async def test_join_must_come_from_the_joiners_own_address(lab: Lab) -> None:
    first, join_token, port = await lab.first_server()
    secret = join_token.rsplit(":", 1)[1]
    ca = first.paths.server_ca.read_bytes()
    transport = httpx.AsyncHTTPTransport(local_address=FIRST_IP, verify=client_ssl(ca))
    async with httpx.AsyncClient(transport=transport) as c:
        r = await c.post(
            f"https://{FIRST_IP}:{port}/v1-k3s/join",
            json={"name": "liar", "ip": "10.0.0.9", "role": "server", "url": "https://x"},
            auth=("server", secret),
        )
        assert r.status_code == 403
        assert "own (mesh) address" in r.json()["message"]
        r = await c.get(f"https://{FIRST_IP}:{port}/api/v1/nodes")
        assert r.status_code == 401  # the node API wants the kubeconfig's bearer token
        auth = base64.b64encode(b"server:wrong").decode()
        r = await c.post(
            f"https://{FIRST_IP}:{port}/v1-k3s/sync",
            json={"version": 99, "members": {}},
            headers={"Authorization": f"Basic {auth}"},
        )
        assert r.status_code == 401
    assert [n.name for n in await first.nodes()] == ["rpi111"]


async def test_supervisor_restarts_a_dead_k3s_and_a_new_backend_adopts_it(lab: Lab) -> None:
    first, _, port = await lab.first_server()
    pid = int(first.paths.pid_file.read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    await first.wait_ready(FIRST_IP, port, timeout=30)  # waits through the restart
    new_pid = int(first.paths.pid_file.read_text().split()[0])
    assert new_pid != pid
    # A second driver on the same root (a restarted backend) adopts instead of starting twice.
    again = K3sDriver(first.root, binary=lab.wrapper, use_systemd=False)
    lab.drivers.append(again)
    await again.start()
    assert int(first.paths.pid_file.read_text().split()[0]) == new_pid
    # A changed config (here: one more certificate name) restarts K3s so it takes effect.
    cfg = again.node_config(
        node_ip=FIRST_IP,
        node_name="rpi111",
        flannel_iface="lo",
        cluster_init=True,
        https_listen_port=port,
        tls_san=["rpi111.lan"],
    )
    assert again.write_config(cfg) is True
    await again.start()
    await again.wait_ready(FIRST_IP, port, timeout=30)
    assert int(first.paths.pid_file.read_text().split()[0]) not in (pid, new_pid)
    with pytest.raises(ProcessLookupError):
        os.kill(new_pid, 0)


@pytest.mark.parametrize(
    ("args", "config", "named"),
    [
        (["--no-deploy", "traefik"], "", "-no-deploy"),
        ([], "no-deploy:\n  - traefik\n", "-no-deploy"),
        (["--cluster-secret=x"], "", "-cluster-secret"),
        ([], "flannel-backend: wireguard\n", "wireguard-native"),
        ([], "bogus-key: 1\n", "bogus-key"),
    ],
)
def test_standin_refuses_flags_and_keys_k3s_does_not_have(
    tmp_path: Path, args: list[str], config: str, named: str
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config)
    proc = subprocess.run(
        argv("server", f"--config={cfg}", *args),
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert named in proc.stderr
    assert not (tmp_path / "var").exists()  # refused before doing anything


def test_agent_keys_are_strict_too(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text('server: "https://127.0.0.1:1"\ntoken: x\ncluster-init: true\n')
    proc = subprocess.run(
        argv("agent", f"--config={cfg}"),
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "flag provided but not defined: -cluster-init" in proc.stderr


async def test_wait_ready_times_out_naming_the_address(tmp_path: Path) -> None:
    d = K3sDriver(tmp_path, use_systemd=False)
    port = free_port(FIRST_IP)  # nobody listens there
    with pytest.raises(K3sError, match=rf"https://{FIRST_IP}:{port}/ping did not answer"):
        await d.wait_ready(FIRST_IP, port, timeout=0.5)
