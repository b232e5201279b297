"""What PCloud asks of K3s on one node, rendered as config.yaml or as `--flag=value` arguments.

One `K3sConfig` describes a node bound to the WireGuard mesh (k3s/README.md, "Binding K3s to the
WireGuard mesh"): `node-ip`, `advertise-address` and `bind-address` are the overlay address,
`flannel-iface` is the WireGuard interface (flannel keeps vxlan over it: wireguard-native would
encrypt twice), `tls-san` adds the overlay IP and hostname, traefik is disabled with `disable`
(the seed's `--no-deploy` no longer exists). The first server has `cluster-init` so it can grow to
embedded-etcd HA; a joining server has `server` instead. The token is never in the config: it is
in a 0600 file named by `token-file`, so neither config.yaml nor argv carries the secret.

Every rendering is checked against flags.json before anyone writes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from pcloud.backend.k3s import flags

Role = Literal["server", "agent"]

DEFAULT_DATA_DIR = "/var/lib/rancher/k3s"
DEFAULT_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
DEFAULT_PORT = 6443


@dataclass
class K3sConfig:
    """The settings of one K3s node. Paths are as K3s sees them (already under the lab root)."""

    node_ip: str
    node_name: str
    flannel_iface: str
    token_file: str
    role: Role = "server"
    cluster_init: bool = False  # first server only
    server_url: str | None = None  # joining nodes: https://10.0.0.1:6443
    tls_san: list[str] = field(default_factory=list)
    disable: list[str] = field(default_factory=lambda: ["traefik"])
    # root and its group: the seed's 644 would hand cluster-admin to every local user.
    write_kubeconfig_mode: str = "0640"
    data_dir: str = DEFAULT_DATA_DIR
    kubeconfig: str = DEFAULT_KUBECONFIG
    https_listen_port: int = DEFAULT_PORT
    extra: dict[str, object] = field(default_factory=dict)  # further keys, validated the same way

    def mapping(self) -> dict[str, object]:
        """The config keys in a stable order (defaults that K3s already has are left out)."""
        m: dict[str, object] = {}
        if self.role == "server" and self.cluster_init:
            if self.server_url:
                raise flags.FlagError("cluster-init and server exclude each other", "cluster-init")
            m["cluster-init"] = True
        if self.server_url:
            m["server"] = self.server_url
        elif self.role == "agent":
            raise flags.FlagError("an agent needs a server URL", "server")
        m["token-file"] = self.token_file
        m["node-name"] = self.node_name
        m["node-ip"] = self.node_ip
        if self.role == "server":
            m["advertise-address"] = self.node_ip
        m["bind-address"] = self.node_ip
        m["flannel-iface"] = self.flannel_iface
        if self.role == "server":
            if self.https_listen_port != DEFAULT_PORT:
                m["https-listen-port"] = self.https_listen_port
            # Node name and node IPs are always in the certificate; listing them makes the
            # certificate's names visible in our config, which is where an admin looks.
            m["tls-san"] = _unique([self.node_ip, self.node_name, *self.tls_san])
            if self.disable:
                m["disable"] = list(self.disable)
            m["write-kubeconfig-mode"] = self.write_kubeconfig_mode
            if self.kubeconfig != DEFAULT_KUBECONFIG:
                m["write-kubeconfig"] = self.kubeconfig
        if self.data_dir != DEFAULT_DATA_DIR:
            m["data-dir"] = self.data_dir
        m.update(self.extra)
        return m

    def validate(self) -> None:
        """Raise `flags.FlagError` naming the first key or value the pinned K3s would refuse."""
        argv = flags.config_args(self.role, self.mapping())
        flags.validate_argv(self.role, argv)

    def config_yaml(self) -> str:
        """config.yaml text for this node (validated)."""
        self.validate()
        return to_yaml(self.mapping())

    def argv(self) -> list[str]:
        """`<role> --key=value ...`: the same settings as a command line (validated)."""
        self.validate()
        return [self.role, *flags.config_args(self.role, self.mapping())]

    def server_argv(self) -> list[str]:
        if self.role != "server":
            raise ValueError("server_argv() on an agent config")
        return self.argv()

    def agent_argv(self) -> list[str]:
        if self.role != "agent":
            raise ValueError("agent_argv() on a server config")
        return self.argv()


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _yaml_scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # A JSON string is a valid YAML double-quoted scalar; quoting everything keeps "0640" a
    # string and an IP or a hostname like "on" from turning into a number or a bool.
    return json.dumps(str(value))


def to_yaml(mapping: dict[str, object]) -> str:
    """Render a flat mapping of scalars and lists of scalars as YAML (no library needed)."""
    lines = ["# Written by PCloud; edits are overwritten. Keys are checked against K3s's flags."]
    for key, value in mapping.items():
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"  - {_yaml_scalar(item)}" for item in value)
        else:
            lines.append(f"{key}: {_yaml_scalar(value)}")
    return "\n".join(lines) + "\n"
