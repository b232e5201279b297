"""BackendSettings: command-line flags over a TOML file over defaults, validated once.

The TOML file (`/etc/pcloud/backend.toml` unless `--config`) uses the flag names with
underscores, e.g. `state_dir = "/var/lib/pcloud"`, `server = "https://…/#fp=sha256:…"`,
`auth_key_file = "/etc/pcloud/authkey"`, `headless = true`. A missing default file is fine; a
missing `--config` file, an unknown key or a wrong type is an error naming it.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcloud.backend.version import package_version

DEFAULT_CONFIG = Path("/etc/pcloud/backend.toml")


class ConfigError(Exception):
    """The configuration is unusable; the message names the setting."""


def default_hostname() -> str:
    """This machine's name as a DNS label (the coordination server insists on one)."""
    name = socket.gethostname().split(".")[0].lower()
    name = re.sub(r"[^a-z0-9-]+", "-", name).strip("-")[:63].strip("-")
    return name or "pcloud-device"


@dataclass
class BackendSettings:
    state_dir: Path = Path("/var/lib/pcloud")
    socket: Path = Path("/run/pcloud/backend.sock")
    # The socket is always 0660 root:`socket_group`; `<socket>.ro` beside it (0666) lets every
    # local user read the status. False drops `.ro` where other users must not see the peers.
    socket_group: str = "pcloud"
    readonly_socket: bool = True
    interface: str = "pcloud0"
    headless: bool = False
    server: str | None = None  # join link used by --headless
    auth_key: str | None = None
    auth_key_file: Path | None = None
    hostname: str = dataclasses.field(default_factory=default_hostname)
    driver: str = "auto"  # auto | kernel | userspace | fake (fake: tests without root)
    wireguard_go: str | None = None
    wg_socket_dir: Path | None = None
    listen_port: int | None = None  # None: let WireGuard pick a port
    log_level: str = "INFO"
    poll_timeout: int = 50  # long-poll seconds asked of the server
    endpoint_check_s: float = 10.0
    # How often the coordination server's /health is asked while the long poll waits: an
    # outage shows (and clears) within this plus 3 s. One tiny request per device per period.
    control_probe_s: float = 5.0
    # Where install-server/join-server put system files (K3s binary, config and data, systemd
    # units): "/" on a real machine, a private directory per virtual host in the lab.
    system_root: Path = Path("/")
    service_manager: str = "auto"  # auto (systemd if PID 1 and root "/") | systemd | child
    # The K3s binary install-server/join-server use when their request names none (the GUI's
    # wizard never does): None means the pinned release, downloaded and SHA-256 verified.
    k3s_binary: Path | None = None

    def __repr__(self) -> str:  # the auth key must never reach a log line
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if fields["auth_key"]:
            fields["auth_key"] = "<redacted>"
        return "BackendSettings(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"

    def read_auth_key(self) -> str | None:
        if self.auth_key:
            return self.auth_key
        if self.auth_key_file:
            try:
                return self.auth_key_file.read_text().strip() or None
            except OSError as e:
                raise ConfigError(f"auth_key_file {self.auth_key_file}: {e.strerror}") from None
        return None


_PATHS = {"state_dir", "socket", "auth_key_file", "wg_socket_dir", "system_root", "k3s_binary"}


def _coerce(name: str, value: Any) -> Any:
    field_types = {f.name: f.type for f in dataclasses.fields(BackendSettings)}
    if name not in field_types:
        raise ConfigError(f"unknown setting {name!r}")
    if name in _PATHS:
        if not isinstance(value, str | Path):
            raise ConfigError(f"setting {name!r} must be a path string")
        return Path(value)
    expected = {"headless": bool, "readonly_socket": bool, "poll_timeout": int, "listen_port": int,
                "endpoint_check_s": (int, float), "control_probe_s": (int, float)}.get(name, str)
    if value is not None and not isinstance(value, expected):  # type: ignore[arg-type]
        raise ConfigError(f"setting {name!r} has the wrong type ({type(value).__name__})")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pcloud-backend", description="PCloud privileged backend")
    p.add_argument("--version", action="version", version=f"pcloud-backend {package_version()}")
    p.add_argument("--config", type=Path, help=f"TOML config (default {DEFAULT_CONFIG})")
    p.add_argument("--state-dir", type=Path)
    p.add_argument("--socket", type=Path,
                   help="local API socket path (0660 root:GROUP; read-only socket at PATH.ro)")
    p.add_argument("--socket-group", help="group allowed to change things (default pcloud)")
    p.add_argument("--no-readonly-socket", dest="readonly_socket", action="store_false",
                   default=None, help="no world-readable PATH.ro socket: only root and the "
                   "group may even read the status")
    p.add_argument("--interface", help="WireGuard interface name (default pcloud0)")
    p.add_argument("--headless", action="store_true", default=None,
                   help="log in with a pre-auth key and come up on boot (no GUI)")
    p.add_argument("--server", help="join link https://HOST:PORT/#fp=sha256:HEX")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--auth-key", help="pre-auth key (prefer --auth-key-file)")
    key.add_argument("--auth-key-file", type=Path)
    p.add_argument("--hostname")
    p.add_argument("--driver", choices=["auto", "kernel", "userspace", "fake"])
    p.add_argument("--wireguard-go", help="path of the wireguard-go binary")
    p.add_argument("--wg-socket-dir", type=Path, 
                   help="UAPI socket dir (default /var/run/wireguard)")
    p.add_argument("--listen-port", type=int)
    p.add_argument("--system-root", "--k3s-root", dest="system_root", type=Path,
                   help="root for K3s and systemd files written by install-server (default /)")
    p.add_argument("--service-manager", choices=["auto", "systemd", "child"],
                   help="how server daemons are kept running (default auto: systemd if it "
                   "is PID 1, else supervised by the backend)")
    p.add_argument("--k3s-binary", type=Path,
                   help="K3s binary for install-server/join-server requests that name none "
                   "(default: the pinned release, downloaded and SHA-256 verified)")
    p.add_argument("--log-level", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def load_settings(argv: list[str] | None = None) -> BackendSettings:
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    config_path: Path = args.config or DEFAULT_CONFIG
    try:
        with open(config_path, "rb") as f:
            values.update(tomllib.load(f))
    except FileNotFoundError:
        if args.config:
            raise ConfigError(f"config file {config_path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {config_path}: {e}") from None
    for name, value in vars(args).items():
        if name != "config" and value is not None:
            values[name] = value
    settings = BackendSettings()
    for name, value in values.items():
        setattr(settings, name, _coerce(name, value))
    return settings
