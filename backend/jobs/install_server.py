"""The install-server job: this machine becomes the network's first server (DESIGN section 5).

Steps, each checking the fact before acting so a rerun after a failure, a crash or a reboot
continues where it stopped and never makes a second key, CA, node or admin:

1. key pair: the backend's WireGuard key (made at its first start; 0600, never sent);
2. coordination server: `pcloud-server` with its state, CA and certificate in
   STATE_DIR/server, as a systemd unit or a supervised child; waits for /health over TLS;
3. this device as server: registered through the server's admin socket (root only, before any
   user exists) with role server and the first address, the WireGuard interface up;
4. K3s: installed (--k3s-binary, else the backend's k3s_binary setting, else the pinned
   release), configured as the first server of an embedded-etcd cluster bound to the overlay
   address, started, answering on NODE_IP:6443; its join token published to the coordination
   server (only server-role nodes can read it);
5. first admin: with credentials given, created with the setup code; otherwise the result
   carries the setup code so the GUI (or the CLI) does it. The result carries the join link.

Admin credentials are kept in memory only (never in the job file): a job resumed after a crash
without them ends with the setup code in its result instead.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from pcloud.backend.control import client as control
from pcloud.backend.control.pinning import (
    ca_fingerprint,
    install_line,
    parse_join_link,
    spki_pin,
)
from pcloud.backend.endpoints import host_ipv4_addresses
from pcloud.backend.jobs.runner import JobSpec, Step, StepContext
from pcloud.backend.k3s.driver import K3sDriver, K3sError
from pcloud.server.protocol import Health, RegisterAnswer, RegisterRequest

if TYPE_CHECKING:
    from pcloud.backend.jobs.host import JobHost

log = logging.getLogger(__name__)

KIND = "install-server"
DEFAULT_NETWORK = "10.0.0.0/24"
DEFAULT_PORT = 8443
K3S_PORT = 6443
# Secrets for running jobs, by job id: never persisted with the job.
_credentials: dict[str, tuple[str, str]] = {}


class StepFailed(RuntimeError):
    """A step cannot finish; the message says what to do."""


# -- shared with join-server ---------------------------------------------------------------------


def k3s_driver(backend: JobHost, binary: str | None) -> K3sDriver:
    """The backend's one K3s driver: two would each supervise (and restart) the same K3s.

    `binary` is the request's --k3s-binary; without one, the backend's own `k3s_binary` setting
    (so a GUI request, which names none, can still use a local binary); without that, the pinned
    release."""
    driver: K3sDriver | None = backend.k3s
    if driver is None:
        driver = K3sDriver(
            root=backend.settings.system_root,
            use_systemd=backend.services.manager == "systemd",
        )
        backend.k3s = driver
    default = backend.settings.k3s_binary
    driver.given_binary = Path(binary) if binary else default
    return driver


async def wait_backend(
    backend: JobHost, ready: Callable[[], bool], what: str, timeout: float = 60.0
) -> None:
    """Wait until `ready()` holds, re-checking on each backend event (no polling loop)."""
    deadline = time.monotonic() + timeout
    async with backend.bus.subscribe() as events:
        while not ready():
            left = deadline - time.monotonic()
            if left <= 0:
                raise StepFailed(f"timed out after {timeout:.0f}s waiting for {what}")
            try:
                async with asyncio.timeout(left):
                    await events.get()
            except TimeoutError:
                continue


def running(backend: JobHost) -> bool:
    return backend.state.value == "Running"


def server_of(backend: JobHost) -> tuple[str, str]:
    """(CA PEM, base URL) of the server this backend is logged in to."""
    ca = backend.store.load_ca()
    if backend.node is None or ca is None:
        raise StepFailed("this device is not logged in to a network")
    return ca, parse_join_link(backend.node.server_url).base_url


async def resume_services(backend: JobHost) -> None:
    """At backend start: supervise again what install/join-server left running."""
    await backend.services.resume()
    role = backend.services.k3s_role
    if role and backend.services.manager == "child":
        driver = k3s_driver(backend, None)
        if driver.paths.config.exists() and driver.paths.binary.exists():
            try:
                await driver.start(role)
            except K3sError as exc:
                log.error("cannot resume K3s: %s", exc)


# -- the steps -----------------------------------------------------------------------------------


def _listen(params: dict[str, Any], interface: str) -> tuple[str, str]:
    """(host:port for --listen, https://host:port) from the job's `listen`, or the first LAN
    address (not on our WireGuard `interface`) with port 8443."""
    listen = params.get("listen")
    if not listen:
        addrs = [
            a
            for name, a in host_ipv4_addresses()
            if not ipaddress.ip_address(a).is_loopback and name != interface
        ]
        if not addrs:
            raise StepFailed("no LAN address found: give --listen LAN_ADDR:PORT")
        listen = f"{addrs[0]}:{DEFAULT_PORT}"
    host, sep, port = str(listen).rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise StepFailed(f"--listen {listen!r} must be LAN_ADDR:PORT with an IP address") from None
    if not sep or not port.isdigit() or ip.is_unspecified:
        raise StepFailed(f"--listen {listen!r} must be LAN_ADDR:PORT (a concrete address)")
    shown = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"{shown}:{port}", f"https://{shown}:{port}"


class InstallServer:
    def __init__(self, backend: JobHost) -> None:
        self.backend = backend
        self.server_dir = backend.services.server_dir

    def spec(self) -> JobSpec:
        return JobSpec(
            KIND,
            [
                Step("key pair", self.key_pair),
                Step("coordination server", self.coordination_server),
                Step("this device as server", self.register),
                Step("K3s", self.k3s),
                Step("first admin", self.first_admin),
            ],
        )

    async def key_pair(self, ctx: StepContext) -> str:
        path = self.backend.store.key_path
        if not path.exists():  # noqa: ASYNC240 - one stat; the backend made it at start
            raise StepFailed(f"the backend's key {path} is missing: restart pcloud-backend")
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
        return f"public key {self.backend.public_key}"

    def ca_pem(self) -> str:
        return (self.server_dir / "tls" / "ca.pem").read_text()

    async def coordination_server(self, ctx: StepContext) -> str:
        listen, url = _listen(ctx.params, self.backend.settings.interface)
        network = str(ctx.params.get("network") or DEFAULT_NETWORK)
        try:
            ipaddress.ip_network(network, strict=True)
        except ValueError as exc:
            raise StepFailed(f"--network {network!r} is not a CIDR: {exc}") from None
        services = self.backend.services
        public_url = str(ctx.params.get("public_url") or "")
        await services.start_server(
            listen, network, self.backend.settings.hostname, public_url=public_url
        )
        await services.wait_healthy(url, self.server_dir / "tls" / "ca.pem")
        fp = ca_fingerprint(self.ca_pem())
        ctx.data.update(url=url, join_link=f"{url}/#fp=sha256:{fp}", network=network)
        how = "systemd unit" if services.manager == "systemd" else "supervised by the backend"
        return f"{url} ({how}), CA sha256:{fp[:16]}"

    async def register(self, ctx: StepContext) -> str:
        backend, link = self.backend, str(ctx.data["join_link"])
        node, netmap = backend.node, backend.netmap
        if node is not None:
            if parse_join_link(node.server_url).fingerprint != parse_join_link(link).fingerprint:
                raise StepFailed(
                    "this device is logged in to another network: `pcloud logout` first"
                )
        if node is None or netmap is None or netmap.self.role != "server":
            request = RegisterRequest(
                public_key=backend.public_key, hostname=backend.settings.hostname, endpoints=[]
            )
            transport = httpx.AsyncHTTPTransport(uds=str(self.server_dir / "admin.sock"))
            async with httpx.AsyncClient(transport=transport, base_url="http://admin") as c:
                r = await c.post("/api/v1/cluster/first-server", json=request.model_dump())
            if r.status_code != 200:
                raise StepFailed(f"registration refused: {r.text[:300]}")
            await backend.adopt_registration(link, self.ca_pem(), RegisterAnswer(**r.json()))
        await wait_backend(backend, lambda: running(backend), "the WireGuard interface")
        assert backend.node is not None
        return f"{backend.node.address} on {backend.settings.interface}"

    async def k3s(self, ctx: StepContext) -> str:
        backend = self.backend
        ca, server = server_of(backend)
        assert backend.node is not None
        node_ip, name = backend.node.address, backend.settings.hostname
        driver = k3s_driver(backend, ctx.params.get("k3s_binary"))
        await driver.install()
        cfg = driver.node_config(
            node_ip=node_ip,
            node_name=name,
            flannel_iface=backend.settings.interface,
            cluster_init=True,
            tls_san=[node_ip, name],
        )
        backend.services.remember_k3s("server")  # before start: a restarted backend adopts it
        ctx.progress(f"starting K3s, waiting for https://{node_ip}:{K3S_PORT}")
        token = await driver.init_server(cfg)
        k3s_url = f"https://{node_ip}:{K3S_PORT}"
        await control.call(
            ca, server, "PUT", "/cluster/k3s",
            token=backend.node.node_token, body={"token": token, "server_urls": [k3s_url]},
        )  # fmt: skip
        return f"first server of the cluster, API on {k3s_url}"

    async def first_admin(self, ctx: StepContext) -> str:
        backend = self.backend
        ca, server = server_of(backend)
        link = str(ctx.data["join_link"])
        pin = spki_pin((self.server_dir / "tls" / "server.pem").read_bytes())
        ctx.set_result(
            join_link=link,
            install_line=install_line(server, pin),
            address=backend.node.address if backend.node else None,
        )
        health = Health.model_validate(await control.call(ca, server, "GET", "/health"))
        credentials = _credentials.pop(ctx.job_id, None)
        if not health.needs_setup:
            return "an admin exists already"
        code_file = self.server_dir / "setup-code"
        code = code_file.read_text().strip()
        if credentials is None:
            ctx.set_result(setup_code=code)
            return "setup code shown: create the first admin with it"
        username, password = credentials
        await control.call(
            ca, server, "POST", "/setup",
            body={"setup_code": code, "username": username, "password": password},
        )  # fmt: skip
        ctx.set_result(admin=username)
        return f"{username} created"


def start(backend: JobHost, params: dict[str, Any], credentials: tuple[str, str] | None) -> str:
    """Start (or resume) the install-server job; returns its id."""
    job = InstallServer(backend)
    clean = {k: v for k, v in params.items() if v is not None}
    job_id = backend.jobs.start(job.spec(), params=clean)
    if credentials is not None:
        _credentials[job_id] = credentials
    return job_id
