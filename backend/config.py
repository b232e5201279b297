"""BackendSettings: command-line flags over a TOML file over defaults, validated once.

The TOML file (`/etc/pcloud/backend.toml` unless `--config`) uses the flag names with
underscores, e.g. `state_dir = "/var/lib/pcloud"`, `server = "https://…/#fp=sha256:…"`,
`auth_key_file = "/etc/pcloud/authkey"`, `headless = true`. A missing default file is fine; a
missing `--config` file, an unknown key or a wrong type is an error naming it.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import ipaddress
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pcloud.backend.nat.advertise import check_advertised
from pcloud.backend.version import package_version
from pcloud.server.protocol import dns_label

DEFAULT_CONFIG = Path("/etc/pcloud/backend.toml")

# fake: a driver without root or WireGuard, for tests
Driver = Literal["auto", "kernel", "userspace", "fake"]
# auto: systemd if it is PID 1 and the system root is "/", else the backend supervises
ServiceManager = Literal["auto", "systemd", "child"]
# names for devices (backend/dns), see BackendSettings.dns
DnsMode = Literal["auto", "resolved", "file", "off"]


class ConfigError(Exception):
    """The configuration is unusable; the message names the setting."""


def default_hostname() -> str:
    """This machine's name as a DNS label (the coordination server insists on one)."""
    return dns_label(socket.gethostname().split(".")[0], fallback="pcloud-device")


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
    driver: Driver = "auto"
    wireguard_go: str | None = None
    wg_socket_dir: Path | None = None
    listen_port: int | None = None  # None: let WireGuard pick a port
    # IP:PORT that reaches this device's WireGuard port from outside its LAN (a router's
    # forwarded UDP port): reported as a candidate beside the LAN addresses (DESIGN section 9).
    advertise_endpoint: str | None = None
    log_level: str = "INFO"
    poll_timeout: int = 50  # long-poll seconds asked of the server
    endpoint_check_s: float = 10.0
    # How often the coordination server's /health is asked while the long poll waits: an
    # outage shows (and clears) within this plus 3 s. One tiny request per device per period.
    control_probe_s: float = 5.0
    # Where install-server/join-server put system files (K3s binary, config and data, systemd
    # units): "/" on a real machine, a private directory per virtual host in the lab.
    system_root: Path = Path("/")
    service_manager: ServiceManager = "auto"
    # The K3s binary install-server/join-server use when their request names none (the GUI's
    # wizard never does): None means the pinned release, downloaded and SHA-256 verified.
    k3s_binary: Path | None = None
    # Names for devices (backend/dns): "auto" uses systemd-resolved when it runs, else a managed
    # /etc/resolv.conf; "resolved" or "file" force one; "off" leaves the system's DNS alone.
    dns: DnsMode = "auto"
    # Where the resolver listens in "file" mode (resolv.conf has no port: it must be port 53);
    # in "resolved" mode it listens on the device's overlay address instead.
    dns_listen: str = "127.0.10.53"
    resolv_conf: Path = Path("/etc/resolv.conf")
    # Local API limits (localapi/server.py): seconds to finish a request head, and connections
    # one uid may hold (root and the backend's own uid are exempt).
    api_head_timeout_s: float = 10.0
    api_max_connections_per_uid: int = 32

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


_PATHS = {
    "state_dir", "socket", "auth_key_file", "wg_socket_dir", "system_root", "k3s_binary",
    "resolv_conf",
}  # fmt: skip
DNS_MODES: tuple[DnsMode, ...] = get_args(DnsMode)
_TYPES: dict[str, type | tuple[type, ...]] = {
    "headless": bool,
    "readonly_socket": bool,
    "poll_timeout": int,
    "listen_port": int,
    "endpoint_check_s": (int, float),
    "api_head_timeout_s": (int, float),
    "api_max_connections_per_uid": int,
    "control_probe_s": (int, float),
}  # the other settings are strings
_CHOICES: dict[str, tuple[str, ...]] = {
    "driver": get_args(Driver),
    "service_manager": get_args(ServiceManager),
    "dns": DNS_MODES,
}


def _toml_kind(expected: type | tuple[type, ...]) -> str:
    """The TOML spelling a user needs: `headless = true`, not `headless = "yes"`."""
    kinds = expected if isinstance(expected, tuple) else (expected,)
    if bool in kinds:
        return "true or false"
    if float in kinds:
        return "a number"
    return "a whole number" if int in kinds else "a quoted string"


def _coerce(name: str, value: Any) -> Any:
    field_types = {f.name: f.type for f in dataclasses.fields(BackendSettings)}
    if name not in field_types:
        close = difflib.get_close_matches(name, field_types, n=1)
        raise ConfigError(
            f"unknown setting {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        )
    if name in _PATHS:
        if not isinstance(value, str | Path):
            raise ConfigError(f"setting {name!r} must be a path string")
        return Path(value)
    expected = _TYPES.get(name, str)
    if value is not None and not isinstance(value, expected):
        raise ConfigError(
            f"setting {name!r} must be {_toml_kind(expected)}, not {type(value).__name__}"
        )
    if name in _CHOICES and value not in _CHOICES[name]:
        raise ConfigError(f"setting {name!r} must be one of {', '.join(_CHOICES[name])}")
    if name == "hostname" and value is not None:
        # The one normalisation (protocol.dns_label): the server takes only DNS labels.
        return dns_label(str(value), fallback="pcloud-device")
    if name == "dns_listen" and value is not None:
        try:
            ipaddress.ip_address(str(value))
        except ValueError:
            raise ConfigError(
                f"setting 'dns_listen' must be an IP address, not {value!r}"
            ) from None
    if name == "advertise_endpoint" and value is not None:
        try:
            return check_advertised(str(value))  # IP:PORT, or NAME:PORT resolved at each report
        except ValueError as e:
            raise ConfigError(f"setting 'advertise_endpoint': {e}") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pcloud-backend", description="PCloud privileged backend")
    p.add_argument("--version", action="version", version=f"pcloud-backend {package_version()}")
    p.add_argument("--config", type=Path, help=f"TOML config (default {DEFAULT_CONFIG})")
    p.add_argument("--state-dir", type=Path)
    p.add_argument(
        "--socket",
        type=Path,
        help="local API socket path (0660 root:GROUP; read-only socket at PATH.ro)",
    )
    p.add_argument("--socket-group", help="group allowed to change things (default pcloud)")
    p.add_argument(
        "--no-readonly-socket",
        dest="readonly_socket",
        action="store_false",
        default=None,
        help="no world-readable PATH.ro socket: only root and the group may even read the status",
    )
    p.add_argument("--interface", help="WireGuard interface name (default pcloud0)")
    p.add_argument(
        "--headless",
        action="store_true",
        default=None,
        help="log in with a pre-auth key and come up on boot (no GUI)",
    )
    p.add_argument("--server", help="join link https://HOST:PORT/#fp=sha256:HEX")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--auth-key", help="pre-auth key (prefer --auth-key-file)")
    key.add_argument("--auth-key-file", type=Path)
    p.add_argument("--hostname")
    p.add_argument("--driver", choices=_CHOICES["driver"])
    p.add_argument("--wireguard-go", help="path of the wireguard-go binary")
    p.add_argument(
        "--wg-socket-dir", type=Path, help="UAPI socket dir (default /var/run/wireguard)"
    )
    p.add_argument("--listen-port", type=int)
    p.add_argument(
        "--advertise-endpoint",
        metavar="IP_OR_NAME:PORT",
        help="public address:port forwarded to this device's WireGuard port "
        "(the home router's UDP port forward), reported as a candidate",
    )
    p.add_argument(
        "--system-root",
        "--k3s-root",
        dest="system_root",
        type=Path,
        help="root for K3s and systemd files written by install-server (default /)",
    )
    p.add_argument(
        "--service-manager",
        choices=_CHOICES["service_manager"],
        help="how server daemons are kept running (default auto: systemd if it "
        "is PID 1, else supervised by the backend)",
    )
    p.add_argument(
        "--k3s-binary",
        type=Path,
        help="K3s binary for install-server/join-server requests that name none "
        "(default: the pinned release, downloaded and SHA-256 verified; no hash is "
        "pinned yet, so set one for now)",
    )
    p.add_argument(
        "--dns",
        choices=list(DNS_MODES),
        help="names for devices: auto (systemd-resolved if it runs, else a managed "
        "resolv.conf), resolved, file, or off",
    )
    p.add_argument("--dns-listen", help="resolver address in file mode (default 127.0.10.53)")
    p.add_argument(
        "--resolv-conf", type=Path, help="resolver file to manage (default /etc/resolv.conf)"
    )
    p.add_argument(
        "--restore-dns",
        action="store_true",
        default=None,
        help="only restore the resolver file a stopped or killed backend left "
        "managed, then exit (for package removal)",
    )
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
    if not 0 < settings.api_head_timeout_s <= 3600:
        raise ConfigError("setting 'api_head_timeout_s' must be above 0 and at most 3600")
    if settings.api_max_connections_per_uid < 1:
        raise ConfigError("setting 'api_max_connections_per_uid' must be at least 1")
    return settings
