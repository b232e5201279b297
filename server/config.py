"""Server settings, validated once at start and passed down (nothing is read at import time)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--listen {text!r} must be HOST:PORT with a port 1-65535")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"--listen {text!r}: HOST must be an IP address") from None
        return cls(host, int(port))

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"network {text!r} is not a valid CIDR: {exc}") from None
    if net.num_addresses < 4:
        raise ValueError(f"network {text!r} is too small: it needs room for at least 2 devices")
    return net


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    listen: tuple[Listen, ...]
    network: str = "10.0.0.0/24"
    hostname: str = field(default_factory=socket.gethostname)
    # URLs clients should use; defaults to the listen addresses (unspecified ones skipped).
    advertise_urls: tuple[str, ...] = ()
    token_ttl_s: int = 7 * 24 * 3600
    poll_timeout_cap_s: int = 60
    offline_grace_s: float = 10.0
    ephemeral_timeout_s: float = 120.0
    login_attempts_per_minute: int = 5
    max_body_bytes: int = 256 * 1024
    log_level: str = "info"
    # Where the coordination state lives: "sqlite" (STATE_DIR/pcloud.db, one server) or "etcd"
    # (the store every coordination server shares; DESIGN section 8).
    store: str = "sqlite"
    etcd_endpoints: tuple[str, ...] = ()
    etcd_ca: Path | None = None
    etcd_cert: Path | None = None
    etcd_key: Path | None = None
    # The .deb files served to new devices (GET /packages/NAME); None: STATE_DIR/packages.
    packages_dir: Path | None = None

    def __post_init__(self) -> None:
        parse_network(self.network)
        if self.store not in ("sqlite", "etcd"):
            raise ValueError(f"--store {self.store!r} must be sqlite or etcd")
        if self.store == "etcd" and not self.etcd_endpoints:
            raise ValueError("--store etcd needs at least one --etcd-endpoint URL")
        for url in self.etcd_endpoints:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"--etcd-endpoint {url!r} must be an http:// or https:// URL")

    def packages(self) -> Path:
        return self.packages_dir or self.state_dir / "packages"

    @property
    def net(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return parse_network(self.network)

    def server_urls(self) -> list[str]:
        if self.advertise_urls:
            return list(self.advertise_urls)
        return [
            lst.url() for lst in self.listen if not ipaddress.ip_address(lst.host).is_unspecified
        ]

    def cert_names(self) -> list[str]:
        """Names the leaf certificate must cover: listen IPs, hostname, first overlay address."""
        names = [
            lst.host for lst in self.listen if not ipaddress.ip_address(lst.host).is_unspecified
        ]
        names += [self.hostname, "localhost", "127.0.0.1", str(next(self.net.hosts()))]
        return names
