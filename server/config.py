"""Server settings, validated once at start and passed down (nothing is read at import time)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .protocol import DEFAULT_DOMAIN, check_domain, public_host


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
    domain: str = DEFAULT_DOMAIN  # the network's DNS domain: devices resolve HOST.<domain>
    hostname: str = field(default_factory=socket.gethostname)
    # URLs clients should use; defaults to the listen addresses (unspecified ones skipped).
    advertise_urls: tuple[str, ...] = ()
    # The URL devices outside the LAN use (a home router forwarding its HTTPS port here): listed
    # in netmaps after the LAN URLs, and its host is in the leaf certificate (DESIGN section 9).
    public_url: str | None = None
    token_ttl_s: int = 7 * 24 * 3600
    poll_timeout_cap_s: int = 60
    offline_grace_s: float = 10.0
    ephemeral_timeout_s: float = 120.0
    login_attempts_per_minute: int = 5
    # Failed logins per minute for one username from anywhere, and from one source address
    # for any usernames (spraying); each bites with a growing backoff (security.ratelimit).
    login_failures_per_user: int = 20
    login_failures_per_source: int = 30
    # Password hashes (argon2id, 64 MiB each) running at once, and waiting for a slot; more
    # logins than both answer 503 with Retry-After instead of piling up.
    max_concurrent_hashes: int = 2
    max_queued_hashes: int = 8
    # Client addresses whose X-Forwarded-For is believed (a reverse proxy); none by default.
    trusted_proxies: tuple[str, ...] = ()
    # A node token lives this long and is renewed with a key proof (POST /nodes/self/token).
    node_token_ttl_s: int = 30 * 24 * 3600
    # Devices one non-admin user may own (admins are exempt), and addresses kept for server-role
    # nodes when clients have taken the rest of the network.
    max_devices_per_user: int = 100
    server_reserve: int = 5
    # Policy checks (PUT/POST check/DELETE /acl) run in a worker thread with this time budget.
    policy_timeout_s: float = 10.0
    # /metrics and /docs + /openapi.json: None = open only when every listen address is loopback.
    expose_metrics: bool | None = None
    expose_docs: bool | None = None
    max_body_bytes: int = 256 * 1024
    log_level: str = "info"
    # Where the coordination state lives: "sqlite" (STATE_DIR/pcloud.db, one server) or "etcd"
    # (the store every coordination server shares; DESIGN section 8).
    store: str = "sqlite"
    etcd_endpoints: tuple[str, ...] = ()
    etcd_ca: Path | None = None
    etcd_cert: Path | None = None
    etcd_key: Path | None = None
    # Connection limits (server/transport): one deadline for the TLS handshake and each request
    # head; open connections per source (IPv4 address or IPv6 /64, 0: no cap); long polls one
    # node may hold (a further one answers the oldest "unchanged").
    head_timeout_s: float = 10.0
    max_connections_per_source: int = 1000
    max_polls_per_node: int = 2
    stream_keepalive_s: float = 20.0  # a netmap stream's keep-alive line after this silence
    # The .deb files served to new devices (GET /packages/NAME); None: STATE_DIR/packages.
    packages_dir: Path | None = None
    # The relay's UDP port (DESIGN 9): None is the first HTTPS port's number, 0 no UDP relay.
    relay_port: int | None = None

    def __post_init__(self) -> None:
        parse_network(self.network)
        if self.public_url is not None:
            public_host(self.public_url)
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"--trusted-proxy {proxy!r} is not an IP address or CIDR"
                ) from None
        if self.relay_port is not None and not 0 <= self.relay_port <= 65535:
            raise ValueError(f"--relay-port {self.relay_port} must be 0-65535")
        if self.max_devices_per_user < 1 or self.server_reserve < 0:
            raise ValueError("--max-devices-per-user must be >= 1 and --server-reserve >= 0")
        try:
            check_domain(self.domain)
        except ValueError as exc:
            raise ValueError(f"--domain: {exc}") from None
        if self.store not in ("sqlite", "etcd"):
            raise ValueError(f"--store {self.store!r} must be sqlite or etcd")
        if self.store == "etcd" and not self.etcd_endpoints:
            raise ValueError("--store etcd needs at least one --etcd-endpoint URL")
        for url in self.etcd_endpoints:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"--etcd-endpoint {url!r} must be an http:// or https:// URL")

    def loopback_only(self) -> bool:
        return all(ipaddress.ip_address(lst.host).is_loopback for lst in self.listen)

    @property
    def metrics_open(self) -> bool:
        return self.loopback_only() if self.expose_metrics is None else self.expose_metrics

    @property
    def docs_open(self) -> bool:
        return self.loopback_only() if self.expose_docs is None else self.expose_docs

    def packages(self) -> Path:
        return self.packages_dir or self.state_dir / "packages"

    @property
    def net(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return parse_network(self.network)

    def server_urls(self) -> list[str]:
        if self.advertise_urls:
            urls = list(self.advertise_urls)
        else:
            urls = [
                lst.url()
                for lst in self.listen
                if not ipaddress.ip_address(lst.host).is_unspecified
            ]
        if self.public_url and self.public_url not in urls:
            urls.append(self.public_url)
        return urls

    def cert_names(self) -> list[str]:
        """Names the leaf certificate must cover: listen IPs, hostname, first overlay address."""
        names = [
            lst.host for lst in self.listen if not ipaddress.ip_address(lst.host).is_unspecified
        ]
        names += [self.hostname, "localhost", "127.0.0.1", str(next(self.net.hosts()))]
        names += [_url_host(u) for u in self.advertise_urls]
        if self.public_url:
            names.append(public_host(self.public_url))
        return names


def _url_host(url: str) -> str:
    return urlsplit(url).hostname or ""
