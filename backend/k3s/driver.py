"""The K3s driver: the one place that installs, configures, starts, joins and removes K3s.

Jobs (install-server, join-server, remove-server) call it; nothing else runs `k3s`. Every path
lives under a settable `root` ("/" on a real machine, a directory per virtual host in the lab),
every command goes through a `Runner`, and every config key and flag is checked against the
pinned K3s's flags.json before it is written or run. Each operation is idempotent, so a job that
reruns after a crash repeats none of the effects it already had: the binary is replaced only if
its hash differs, the token is generated once, config changes restart K3s only when they differ.

The token lives in ROOT/etc/rancher/k3s/pcloud-token (0600) and is passed as `token-file`, never
on argv, in config.yaml or in a log line. Once K3s runs it writes its own full token
(`K10<ca-hash>::server:<secret>`) to DATA_DIR/server/token; `join_token()` returns that form,
which joining servers receive over the coordination server's authenticated API.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcloud.backend.k3s import flags, install, token, yamlish
from pcloud.backend.k3s.config import K3sConfig, Role
from pcloud.backend.proc import wait_until_up
from pcloud.backend.services.runner import Result, Runner, SubprocessRunner, redact
from pcloud.backend.services.service import ChildService, SystemdService, systemd_running

log = logging.getLogger(__name__)

CONFIG_DIGEST_ENV = "PCLOUD_K3S_CONFIG_SHA256"
_POLL = 0.5  # how often readiness is re-checked while waiting with a deadline


class K3sError(RuntimeError):
    """A K3s operation failed; the message says which and why (never with a secret in it)."""


@dataclass
class Node:
    """One line of `kubectl get nodes`, as the jobs need it."""

    name: str
    ready: bool
    internal_ip: str | None
    roles: list[str] = field(default_factory=list)
    unschedulable: bool = False


class Paths:
    """Every file the driver touches, under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.binary = root / "usr/local/bin/k3s"
        self.config_dir = root / "etc/rancher/k3s"
        self.config = self.config_dir / "config.yaml"
        self.token_file = self.config_dir / "pcloud-token"
        self.kubeconfig = self.config_dir / "k3s.yaml"
        self.data_dir = root / "var/lib/rancher/k3s"
        self.server_token = self.data_dir / "server/token"
        self.server_ca = self.data_dir / "server/tls/server-ca.crt"
        self.pid_file = root / "run/pcloud/k3s.pid"
        self.log_file = root / "var/log/pcloud/k3s.log"
        self.killall = root / "usr/local/bin/k3s-killall.sh"


def _write_secret(path: Path, text: str) -> None:
    """Write a 0600 file atomically; it never exists with a wider mode."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class K3sDriver:
    """K3s on one machine. See the module docstring."""

    def __init__(
        self,
        root: Path = Path("/"),
        runner: Runner | None = None,
        *,
        binary: Path | None = None,
        version: str = install.PINNED_VERSION,
        use_systemd: bool | None = None,
    ) -> None:
        self.root = root
        self.paths = Paths(root)
        self.runner: Runner = runner or SubprocessRunner()
        self.given_binary = binary  # --k3s-binary; None means the pinned release
        self.version = version
        systemd = systemd_running(root) if use_systemd is None else use_systemd
        self.service: SystemdService | ChildService = (
            SystemdService(root, self.runner)
            if systemd
            else ChildService(self.runner, self.paths.pid_file, self.paths.log_file)
        )

    # -- install and configure ----------------------------------------------------------------

    async def install(self, *, sha256: str | None = None) -> bool:
        """Put the binary in place (given file, or pinned download). True if it changed."""
        try:
            if self.given_binary is not None:
                return install.install_given(self.given_binary, self.paths.binary, sha256)
            return await install.install_pinned(self.paths.binary, version=self.version)
        except install.InstallError as exc:
            raise K3sError(str(exc)) from None

    @staticmethod
    def generate_token() -> str:
        """A new shared secret (the bare form K3s accepts on the first server)."""
        return token.generate_secret()

    def ensure_token(self, value: str | None = None) -> bool:
        """Make the token file hold `value` (a join) or, if absent, one generated secret.

        Never replaces an existing first-server secret with a new one: a rerun must not change
        the cluster's token. True if the file was written."""
        path = self.paths.token_file
        if value is None:
            if path.exists():
                return False
            value = self.generate_token()
        else:
            try:
                token.parse_token(value)  # refuse malformed tokens before K3s sees them
            except token.TokenError as exc:
                raise K3sError(f"bad K3s token: {exc}") from None
            if path.exists() and path.read_text().strip() == value.strip():
                return False
        _write_secret(path, value.strip() + "\n")
        log.info("wrote K3s token file %s (0600)", path)
        return True

    def join_token(self) -> str:
        """The full, CA-pinning token for joining servers (after K3s has started once)."""
        if self.paths.server_token.exists():
            return self.paths.server_token.read_text().strip()
        if self.paths.server_ca.exists() and self.paths.token_file.exists():
            secret = token.parse_token(self.paths.token_file.read_text()).password
            return token.format_token(self.paths.server_ca.read_bytes(), secret)
        raise K3sError("K3s has not created its CA yet: start the server first")

    def node_config(
        self,
        *,
        node_ip: str,
        node_name: str,
        flannel_iface: str,
        role: Role = "server",
        cluster_init: bool = False,
        server_url: str | None = None,
        tls_san: list[str] | None = None,
        https_listen_port: int = 6443,
    ) -> K3sConfig:
        """A `K3sConfig` with this driver's root-specific paths filled in."""
        cfg = K3sConfig(
            node_ip=node_ip,
            node_name=node_name,
            flannel_iface=flannel_iface,
            token_file=str(self.paths.token_file),
            role=role,
            cluster_init=cluster_init,
            server_url=server_url,
            tls_san=list(tls_san or []),
            https_listen_port=https_listen_port,
        )
        if self.root != Path("/"):
            cfg.data_dir = str(self.paths.data_dir)
            cfg.kubeconfig = str(self.paths.kubeconfig)
        return cfg

    def write_config(self, cfg: K3sConfig) -> bool:
        """Validate and write config.yaml (0600). True if its content changed."""
        try:
            text = cfg.config_yaml()
        except flags.FlagError as exc:
            raise K3sError(f"refusing K3s config: {exc}") from None
        path = self.paths.config
        if path.exists() and path.read_text() == text:
            return False
        _write_secret(path, text)
        log.info("wrote K3s config %s", path)
        return True

    # -- run ------------------------------------------------------------------------------------

    def command(self, role: Role) -> list[str]:
        """The daemon's command line: everything else is in config.yaml."""
        args = [f"--config={self.paths.config}"]
        flags.validate_argv(role, args + _config_as_args(self.paths.config, role))
        return [str(self.paths.binary), role, *args]

    async def start(self, role: Role = "server", *, restart: bool = False) -> None:
        """Start K3s (systemd unit or supervised child); no-op if it already runs."""
        if not self.paths.binary.exists():
            raise K3sError(f"K3s is not installed at {self.paths.binary}")
        if not self.paths.config.exists():
            raise K3sError(f"no K3s config at {self.paths.config}: write_config() first")
        try:
            argv = self.command(role)
        except flags.FlagError as exc:
            raise K3sError(f"refusing to start K3s: {exc}") from None
        # K3s reads config.yaml only at start: its digest in the environment makes a changed
        # config restart K3s, even if the run that wrote it crashed before restarting.
        digest = hashlib.sha256(self.paths.config.read_bytes()).hexdigest()
        await self.service.start(argv, env={CONFIG_DIGEST_ENV: digest}, restart=restart)

    async def stop(self, role: Role = "server") -> None:
        await self.service.stop([str(self.paths.binary), role, f"--config={self.paths.config}"])

    def _ssl(self) -> ssl.SSLContext:
        if self.paths.server_ca.exists():
            ctx = ssl.create_default_context(cafile=str(self.paths.server_ca))
            ctx.check_hostname = False  # we check the CA; the name is the IP we dialled
            return ctx
        # Before K3s wrote its CA (agents never have one) this is a liveness probe only:
        # nothing secret is sent.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def wait_ready(self, node_ip: str, port: int = 6443, timeout: float = 300.0) -> None:
        """Wait until https://NODE_IP:PORT/ping answers; fail early if K3s died meanwhile."""
        host = f"[{node_ip}]" if ":" in node_ip else node_ip
        url = f"https://{host}:{port}/ping"
        await wait_until_up(
            "K3s API", url, self._ssl, timeout=timeout, daemon=self.service, error=K3sError
        )

    async def wait_node_ready(self, node_name: str, timeout: float = 300.0) -> Node:
        """Wait until `kubectl get nodes` lists `node_name` as Ready."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                for node in await self.nodes():
                    if node.name == node_name and node.ready:
                        return node
            except K3sError as exc:
                if time.monotonic() > deadline:
                    raise
                log.debug("nodes not listed yet: %s", exc)
            if time.monotonic() > deadline:
                raise K3sError(f"node {node_name} not Ready within {timeout:.0f}s")
            await asyncio.sleep(_POLL)

    async def init_server(self, cfg: K3sConfig, *, timeout: float = 300.0) -> str:
        """Bring up the first server (idempotently) and return the full join token."""
        self.ensure_token()
        self.write_config(cfg)
        await self.start("server")
        await self.wait_ready(cfg.node_ip, cfg.https_listen_port, timeout)
        await self.wait_node_ready(cfg.node_name, timeout)
        return self.join_token()

    async def join(self, cfg: K3sConfig, join_token: str, *, timeout: float = 300.0) -> Node:
        """Join an existing cluster as `cfg.role` through `cfg.server_url` with `join_token`."""
        if not cfg.server_url:
            raise K3sError("join needs the first server's URL")
        self.ensure_token(join_token)
        self.write_config(cfg)
        await self.start(cfg.role)
        if cfg.role == "server":
            await self.wait_ready(cfg.node_ip, cfg.https_listen_port, timeout)
        return await self.wait_node_ready(cfg.node_name, timeout)

    # -- cluster operations ---------------------------------------------------------------------

    async def _k3s(self, *args: str, timeout: float = 60.0) -> Result:
        argv = [str(self.paths.binary), *args]
        result = await self.runner.run(
            argv, env={"KUBECONFIG": str(self.paths.kubeconfig)}, timeout=timeout
        )
        if not result.ok:
            shown = " ".join(redact(argv[1:]))
            raise K3sError(f"k3s {shown} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    async def nodes(self) -> list[Node]:
        """`k3s kubectl get nodes -o json`, parsed."""
        result = await self._k3s("kubectl", "get", "nodes", "-o", "json")
        try:
            doc: dict[str, Any] = json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            raise K3sError(f"kubectl get nodes printed no JSON: {exc}") from None
        return [_node(item) for item in doc.get("items", [])]

    async def drain(self, node: str, timeout: float = 300.0) -> None:
        await self._k3s(
            "kubectl",
            "drain",
            node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 30,
        )

    async def delete_node(self, node: str) -> None:
        await self._k3s("kubectl", "delete", "node", node)

    async def snapshot(self, name: str = "pcloud") -> str:
        """`k3s etcd-snapshot save`: a safety copy before the cluster shrinks. Returns its log
        (K3s reports the snapshot's name on stderr)."""
        args = [f"--config={self.paths.config}", f"--name={name}"]
        flags.validate_argv("etcd-snapshot save", args)
        result = await self._k3s("etcd-snapshot", "save", *args, timeout=300.0)
        return (result.stdout + result.stderr).strip()

    async def uninstall(self, role: Role = "server") -> None:
        """Stop K3s and remove what it and we installed (k3s-uninstall.sh's list, under root)."""
        await self.service.remove([str(self.paths.binary), role, f"--config={self.paths.config}"])
        if self.paths.killall.exists():
            await self.runner.run([str(self.paths.killall)], timeout=120.0)
        for path in (
            self.paths.config_dir,
            self.paths.data_dir,
            self.root / "run/k3s",
            self.root / "run/flannel",
            self.root / "var/lib/kubelet",
        ):
            shutil.rmtree(path, ignore_errors=True)
        for file in (self.paths.binary, self.paths.killall, self.paths.pid_file):
            file.unlink(missing_ok=True)


def _config_as_args(path: Path, role: Role) -> list[str]:
    """Our own config.yaml as arguments, to re-check it before each start (it may be old)."""
    if not path.exists():
        return []
    try:
        return flags.config_args(role, yamlish.load_flat(path.read_text()))
    except yamlish.YamlError as exc:
        raise flags.FlagError(f"{path}: {exc}", "config") from None


def _node(item: dict[str, Any]) -> Node:
    meta = item.get("metadata", {})
    status = item.get("status", {})
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
    )
    ip = next(
        (a.get("address") for a in status.get("addresses", []) if a.get("type") == "InternalIP"),
        None,
    )
    prefix = "node-role.kubernetes.io/"
    roles = sorted(k[len(prefix) :] for k in meta.get("labels", {}) if k.startswith(prefix))
    return Node(
        name=str(meta.get("name", "")),
        ready=ready,
        internal_ip=ip,
        roles=roles,
        unschedulable=bool(item.get("spec", {}).get("unschedulable", False)),
    )
