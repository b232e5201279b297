"""PCloud on lab hosts: a coordination server, backends, accounts and pings, for the demo and e2e.

Every action goes through the real programs (`pcloud-server`, `pcloud-server admin`,
`pcloud-backend`, the `pcloud` CLI, `ping`) inside the virtual hosts; nothing is faked.
"""

from __future__ import annotations

import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.lab.host import Host
from tests.lab.lab import Lab
from tests.lab.process import Proc
from tests.lab.wait import wait_for

BIN = Path(sys.executable).parent
WG_ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
SERVER_DIR = "/var/lib/pcloud/server"
PORT = 8443


def ping(host: Host, ip: str, wait_s: int = 1) -> bool:
    """One ICMP echo from `host` to `ip`; True if it was answered."""
    res = host.run(["ping", "-c1", f"-W{wait_s}", ip], check=False, timeout=wait_s + 5)
    return res.returncode == 0


@dataclass
class Mesh:
    lab: Lab
    server: Host | None = None
    link: str = ""
    server_args: tuple[str, ...] = ()
    server_proc: Proc | None = None
    backends: dict[str, Proc] = field(default_factory=dict)

    # ---- coordination server ------------------------------------------------------------------

    def start_server(self, host: Host | None = None, *extra: str) -> str:
        """Start (or restart) `pcloud-server` on `host`; returns the join link."""
        if host is not None:
            self.server = host
            self.server_args = extra
        assert self.server is not None
        proc = self.server.spawn(
            "pcloud-server",
            [
                str(BIN / "pcloud-server"),
                "--state-dir",
                SERVER_DIR,
                "--listen",
                f"{self.server.ip}:{PORT}",
                "--hostname",
                self.server.name,
                *self.server_args,
            ],
        )
        before = len(re.findall(r"join link:", proc.log_text()))
        found = wait_for(
            lambda: (
                (m := re.findall(r"join link: (\S+)", proc.log_text()))
                and len(m) > before
                and m[-1]
            ),
            timeout=30,
            what="the coordination server's join link",
        )
        self.link = str(found)
        self.server_proc = proc
        wait_for(lambda: self._server_answers(), timeout=30, what="the server to answer")
        return self.link

    def _server_answers(self) -> bool:
        assert self.server is not None
        res = self.server.run(
            ["bash", "-c", f"exec 3<>/dev/tcp/{self.server.ip}/{PORT}"], check=False, timeout=5
        )
        return res.returncode == 0

    def stop_server(self) -> None:
        if self.server_proc is not None:
            self.server_proc.stop()
            self.server_proc = None

    def admin(self, *args: str, input: str | None = None) -> str:
        assert self.server is not None
        argv = [str(BIN / "pcloud-server"), "admin", "--state-dir", SERVER_DIR, *args]
        return self.server.run(argv, input=input).stdout

    def admin_json(self, *args: str) -> Any:
        return json.loads(self.admin("--json", *args))

    def create_user(self, name: str, password: str, *, admin: bool = False) -> None:
        flags = ["--admin"] if admin else []
        self.admin("users", "create", name, *flags, "--password-stdin", input=password + "\n")

    def auth_key(
        self,
        user: str,
        *,
        reusable: bool = False,
        ephemeral: bool = False,
        role: str = "client",
        expiration: str = "1h",
        tags: str = "",
    ) -> str:
        args = ["auth-keys", "create", "--user", user, "--role", role, "--expiration", expiration]
        if reusable:
            args.append("--reusable")
        if ephemeral:
            args.append("--ephemeral")
        if tags:
            args += ["--tags", tags]
        return str(self.admin_json(*args)["key"])

    def set_policy(self, text: str) -> None:
        assert self.server is not None
        path = self.server.path("/etc/pcloud/policy.hujson")
        path.write_text(text)
        self.admin("policy", "set", "/etc/pcloud/policy.hujson")

    def node_id(self, hostname: str) -> int:
        for node in self.admin_json("nodes", "list"):
            if node["hostname"] == hostname:
                return int(node["node_id"])
        raise KeyError(hostname)

    # ---- backends ---------------------------------------------------------------------------

    def start_backend(self, host: Host, *extra: str, wait: bool = True) -> Proc:
        """Start `pcloud-backend` on `host`; with `wait`, until its CLI answers (`wait=False`
        spares many hosts starting at once a `pcloud` process each per try)."""
        # Device names rewrite the host's /etc/resolv.conf: only where it is the host's own copy.
        dns = [] if "/etc/resolv.conf" in host.private_files else ["--dns", "off"]
        proc = host.spawn(
            "pcloud-backend",
            [
                str(BIN / "pcloud-backend"), "--driver", "userspace", "--hostname", host.name,
                *dns, *extra,
            ],
            env=WG_ENV,
        )  # fmt: skip
        self.backends[host.name] = proc
        if not wait:
            return proc
        wait_for(
            lambda: host.pcloud("status", "--json", check=False).returncode == 0,
            timeout=30,
            what=f"{host.name}'s backend socket",
        )
        return proc

    def stop_backend(self, host: Host) -> None:
        proc = self.backends.pop(host.name, None)
        if proc is not None:
            proc.stop()

    def join_headless(self, host: Host, key: str) -> Proc:
        """Boot a backend the way a Pi does: --headless with a pre-auth key file."""
        key_file = host.path("/etc/pcloud/auth-key")
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
        proc = self.start_backend(
            host, "--headless", "--server", self.link, "--auth-key-file", "/etc/pcloud/auth-key"
        )
        self.wait_running(host)
        return proc

    def login(
        self,
        host: Host,
        *,
        key: str | None = None,
        user: str | None = None,
        password: str | None = None,
        check: bool = True,
    ) -> Any:
        if host.name not in self.backends:
            self.start_backend(host)
        if key is not None:
            argv = host.pcloud_argv("login", self.link, "--auth-key", key)
            return host.run(argv, check=check, timeout=60)
        assert user is not None and password is not None
        argv = host.pcloud_argv("login", self.link, "--username", user)
        return host.run(argv, input=password + "\n", check=check, timeout=60)

    def status(self, host: Host) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(host.pcloud("status", "--json").stdout)
        return data

    def running(self, host: Host) -> dict[str, Any] | None:
        res = host.pcloud("status", "--json", check=False)
        if res.returncode != 0:
            return None
        st: dict[str, Any] = json.loads(res.stdout)
        return st if st["state"] == "Running" and st.get("self") else None

    def wait_running(self, host: Host, timeout: float = 30) -> dict[str, Any]:
        st: dict[str, Any] = wait_for(
            lambda: self.running(host), timeout=timeout, what=f"{host.name} to be Running"
        )
        return st

    def address(self, host: Host) -> str:
        return str(self.status(host)["self"]["address"])

    def peers(self, host: Host) -> set[str]:
        return {p["hostname"] for p in self.status(host)["peers"]}

    # ---- traffic ----------------------------------------------------------------------------

    def wait_ping(self, src: Host, ip: str, timeout: float = 20) -> float:
        """Seconds until `src` gets an answer from `ip` through the tunnel."""
        started = time.monotonic()
        wait_for(lambda: ping(src, ip), timeout=timeout, what=f"{src.name} -> {ip}")
        return time.monotonic() - started

    def ping_all(self, hosts: list[Host], timeout: float = 10) -> tuple[int, int, list[str]]:
        """Every ordered pair pings through the mesh; (ok, total, failed pairs)."""
        addresses = {h.name: self.address(h) for h in hosts}

        def from_src(src: Host) -> list[str]:
            failed = []
            for dst in hosts:
                if dst is src:
                    continue
                try:
                    wait_for(
                        lambda ip=addresses[dst.name]: ping(src, ip),
                        timeout=timeout,
                        what=f"{src.name} -> {dst.name}",
                    )
                except Exception:  # noqa: BLE001 - collected and reported by the caller
                    failed.append(f"{src.name}->{dst.name}")
            return failed

        with ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
            failed = [f for part in pool.map(from_src, hosts) for f in part]
        total = len(hosts) * (len(hosts) - 1)
        return total - len(failed), total, failed

    def ping_stream(self, src: Host, ip: str, count: int, interval: float = 0.2) -> Proc:
        """A background `ping` whose log shows how many of `count` echoes were answered."""
        return src.spawn(
            f"ping-{ip}", ["ping", "-n", "-i", str(interval), "-W", "1", "-c", str(count), ip]
        )


def ping_loss(proc: Proc) -> tuple[int, int]:
    """(transmitted, received) from a finished `ping` process's summary line."""
    m = re.search(r"(\d+) packets transmitted, (\d+) received", proc.log_text())
    if not m:
        raise AssertionError(f"no ping summary in: {proc.log_text()[-500:]}")
    return int(m.group(1)), int(m.group(2))
