"""The driver's K3s config and command lines, checked against the raw flags.json."""

from __future__ import annotations

import json

import pytest
import yaml

from pcloud.backend.k3s import flags, yamlish
from pcloud.backend.k3s.config import K3sConfig

# Read flags.json directly, not through flags.py, so a parser bug cannot hide a bad key.
RAW = json.loads(flags.FLAGS_PATH.read_text())


def raw_names(command: str) -> set[str]:
    return {n for f in RAW[command] for n in (f["name"], *f["aliases"])}


def first_server() -> K3sConfig:
    return K3sConfig(
        node_ip="10.0.0.1",
        node_name="rpi111",
        flannel_iface="pcloud0",
        token_file="/etc/rancher/k3s/pcloud-token",
        cluster_init=True,
    )


def joining_server() -> K3sConfig:
    cfg = first_server()
    cfg.cluster_init = False
    cfg.node_ip, cfg.node_name = "10.0.0.2", "rpi112"
    cfg.server_url = "https://10.0.0.1:6443"
    return cfg


def test_first_server_binds_everything_to_the_overlay() -> None:
    m = first_server().mapping()
    assert m == {
        "cluster-init": True,
        "token-file": "/etc/rancher/k3s/pcloud-token",
        "node-name": "rpi111",
        "node-ip": "10.0.0.1",
        "advertise-address": "10.0.0.1",
        "bind-address": "10.0.0.1",
        "flannel-iface": "pcloud0",
        "tls-san": ["10.0.0.1", "rpi111"],
        "disable": ["traefik"],
        "write-kubeconfig-mode": "0640",
    }


@pytest.mark.parametrize("cfg", [first_server(), joining_server()], ids=["first", "join"])
def test_every_key_is_a_current_server_flag(cfg: K3sConfig) -> None:
    names = raw_names("server")
    removed = {r["name"] for r in RAW["removed"]}
    for key in cfg.mapping():
        assert key in names, key
        assert key not in removed, key
    assert "no-deploy" not in cfg.config_yaml()


def test_join_has_server_url_and_no_cluster_init() -> None:
    m = joining_server().mapping()
    assert m["server"] == "https://10.0.0.1:6443"
    assert "cluster-init" not in m
    both = first_server()
    both.server_url = "https://10.0.0.9:6443"
    with pytest.raises(flags.FlagError, match="exclude"):
        both.mapping()


def test_agent_config_uses_only_agent_flags() -> None:
    cfg = joining_server()
    cfg.role = "agent"
    names = raw_names("agent")
    for key in cfg.mapping():
        assert key in names, key
    assert cfg.agent_argv()[0] == "agent"
    with pytest.raises(ValueError):
        cfg.server_argv()


def test_yaml_is_real_yaml_and_reads_back() -> None:
    cfg = first_server()
    text = cfg.config_yaml()
    assert yaml.safe_load(text) == cfg.mapping()  # a real YAML parser agrees
    assert yamlish.load_flat(text) == cfg.mapping()
    assert 'write-kubeconfig-mode: "0640"' in text  # a string, not the octal number 416


def test_argv_uses_flag_equals_value_forms() -> None:
    argv = first_server().server_argv()
    assert argv[0] == "server"
    assert all(a.startswith("--") and "=" in a for a in argv[1:]), argv
    assert "--tls-san=10.0.0.1" in argv and "--tls-san=rpi111" in argv
    assert "--disable=traefik" in argv
    flags.validate_argv("server", argv[1:])


def test_extra_keys_are_checked_too() -> None:
    cfg = first_server()
    cfg.extra = {"no-deploy": ["traefik"]}
    with pytest.raises(flags.FlagError) as err:
        cfg.config_yaml()
    assert err.value.name == "no-deploy"
    cfg.extra = {"flannel-backend": "wireguard"}
    with pytest.raises(flags.FlagError, match="unknown flannel backend"):
        cfg.validate()


def test_lab_paths_are_written_when_not_default() -> None:
    cfg = first_server()
    cfg.data_dir, cfg.kubeconfig, cfg.https_listen_port = "/lab/d", "/lab/k.yaml", 16443
    m = cfg.mapping()
    assert (m["data-dir"], m["write-kubeconfig"], m["https-listen-port"]) == (
        "/lab/d",
        "/lab/k.yaml",
        16443,
    )


def test_yamlish_refuses_what_k3s_does_not_accept() -> None:
    with pytest.raises(yamlish.YamlError, match="nested"):
        yamlish.load_flat("a:\n  b: c\n")
    with pytest.raises(yamlish.YamlError, match="twice"):
        yamlish.load_flat("a: 1\na: 2\n")
    assert yamlish.load_flat("tls-san: [a, 'b']  # c\nx: 'it''s'\n") == {
        "tls-san": ["a", "b"],
        "x": "it's",
    }
