"""Runs a real `pcloud-server` process over HTTPS on loopback for tests and benchmarks.

The server is a subprocess (real TLS, real SQLite file, real restart); clients pin its CA exactly as
the backend does, by the SHA-256 in the join link.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port

BIN = Path(sys.executable).parent


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns a truthy value; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - reported at the deadline
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def key_pair() -> tuple[str, str]:
    """A fresh WireGuard-style key pair: (private, public), both base64."""
    import base64

    import nacl.public

    private = nacl.public.PrivateKey.generate()
    return (
        base64.b64encode(bytes(private)).decode(),
        base64.b64encode(bytes(private.public_key)).decode(),
    )


def etcd_args(endpoints: list[str], ca: Path, cert: Path, key: Path, hostname: str) -> list[str]:
    """pcloud-server flags for a server on a shared etcd store; `hostname` names it in the
    store's server list, so servers on one test machine need different ones."""
    args = ["--store", "etcd", "--hostname", hostname]
    for url in endpoints:
        args += ["--etcd-endpoint", url]
    return [*args, "--etcd-ca", str(ca), "--etcd-cert", str(cert), "--etcd-key", str(key)]


def share_ca(source: Path, target: Path) -> None:
    """Give the state dir `target` the network CA of `source` (as join-server does), so one
    pinned fingerprint covers every coordination server."""
    tls = target / "tls"
    tls.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in ("ca.pem", "ca.key"):
        (tls / name).write_bytes((source / "tls" / name).read_bytes())
        os.chmod(tls / name, 0o600)


class ApiHelpers:
    """Conveniences for tests over `client()`: shared by both tiers (this subprocess one and
    `tests.support.inproc.CoordApp`), so a test switches tiers by its fixture alone."""

    state_dir: Path
    setup_code: str | None

    def client(self, token: str | None = None, timeout: float = 30) -> httpx.Client:
        raise NotImplementedError

    def admin_client(self) -> httpx.Client:
        raise NotImplementedError

    def setup_admin(self, username: str = "admin", password: str = "correct horse") -> str:
        assert self.setup_code, "server already set up"
        with self.client() as c:
            r = c.post(
                "/api/v1/setup",
                json={"setup_code": self.setup_code, "username": username, "password": password},
            )
            r.raise_for_status()
            return str(r.json()["token"])

    def create_user(
        self, admin_token: str, username: str, password: str = "password123", admin: bool = False
    ) -> str:
        with self.client(admin_token) as c:
            c.post(
                "/api/v1/users", json={"username": username, "password": password, "admin": admin}
            ).raise_for_status()
            r = c.post("/api/v1/login", json={"username": username, "password": password})
            r.raise_for_status()
            return str(r.json()["token"])

    def proof(self, private_key: str, purpose: str = "register") -> str:
        """A proof of `private_key` (base64) for `purpose`, sealed to this server's proof key,
        exactly as the backend makes it (backend.control.proof)."""
        from pcloud.backend.control.proof import make_proof
        from pcloud.backend.keys import PrivateKey
        from pcloud.server.protocol import ServerKey

        with self.client() as c:
            key = ServerKey.model_validate(c.get("/api/v1/key").json())
        return make_proof(PrivateKey.from_b64(private_key), key, purpose)  # type: ignore[arg-type]

    def auth_key(self, admin_token: str, **body: Any) -> str:
        with self.client(admin_token) as c:
            r = c.post("/api/v1/auth-keys", json=body)
            r.raise_for_status()
            return str(r.json()["key"])


@dataclass
class CoordServer(ApiHelpers):
    state_dir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    join_link: str = ""
    setup_code: str | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def fingerprint(self) -> str:
        return self.join_link.rpartition("sha256:")[2]

    def start(self, timeout: float = 20) -> CoordServer:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_path = self.state_dir.parent / f"{self.state_dir.name}.log"
        log = open(log_path, "a")  # noqa: SIM115 - owned by the process
        out_path = self.state_dir.parent / f"{self.state_dir.name}.out"
        out = open(out_path, "w")  # noqa: SIM115
        argv = [
            str(BIN / "pcloud-server"),
            "--state-dir",
            str(self.state_dir),
            "--listen",
            f"{self.host}:{self.port}",
            "--offline-grace",
            "0.5",
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(
            argv, stdout=out, stderr=log, text=True, start_new_session=True
        )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"pcloud-server exited: {log_path.read_text()[-2000:]}")
            text = out_path.read_text()
            m = re.search(r"join link: (\S+)", text)
            if not m:
                return False
            self.join_link = m.group(1)
            code = re.search(r"setup code: (\S+)", text)
            self.setup_code = code.group(1) if code else None
            with self.client() as c:
                return c.get("/api/v1/health").status_code == 200

        wait_until(ready, timeout, "pcloud-server to answer /health")
        return self

    def ssl_context(self) -> ssl.SSLContext:
        pem = (self.state_dir / "tls" / "ca.pem").read_bytes()
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        assert hashlib.sha256(der).hexdigest() == self.fingerprint, "CA does not match join link"
        return ssl.create_default_context(cadata=pem.decode())

    def client(self, token: str | None = None, timeout: float = 30) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.url, verify=self.ssl_context(), headers=headers, timeout=timeout
        )

    def async_client(self, token: str | None = None, timeout: float = 90) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            base_url=self.url, verify=self.ssl_context(), headers=headers, timeout=timeout
        )

    def admin_client(self) -> httpx.Client:
        """A client of the admin socket in the state dir (every caller there is an admin)."""
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.state_dir / "admin.sock")),
            base_url="http://admin",
        )

    def admin(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(BIN / "pcloud-server"), "admin", "--state-dir", str(self.state_dir), *args]
        res = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {res.stderr}{res.stdout}")
        return res

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> CoordServer:
        self.stop()
        return self.start()
