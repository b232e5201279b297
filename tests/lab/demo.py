"""The lab demo (the README's main command): the seed's mesh on virtual hosts, end to end.

`python -m tests.lab.demo [--keep]` builds four virtual hosts on one machine (network namespaces
on a bridged 192.168.0.0/24 LAN), starts the coordination server on rpi111, joins rpi112 and
rpi113 headless with a pre-auth key (as on a Pi) and a laptop by user login, prints the mesh as
`pcloud status` on each host sees it, pings every pair through the WireGuard tunnels and ends with
one summary line. `--keep` leaves the lab running (enter a host with `python -m tests.lab.shell
HOST`); `python -m tests.lab.demo down` removes it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from tests.lab import Host, Lab, Proc, wait_for

BIN = Path(sys.executable).parent
WG_ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
SERVER_DIR = "/var/lib/pcloud/server"
PORT = 8443
T = TypeVar("T")


@dataclass
class Mesh:
    lab: Lab
    console: Console
    link: str = ""
    hosts: list[Host] = field(default_factory=list)
    backends: dict[str, Proc] = field(default_factory=dict)
    up_at: dict[str, float] = field(default_factory=dict)
    first_ping: dict[str, float] = field(default_factory=dict)

    def step(self, title: str, action: Callable[[], T]) -> T:
        started = time.monotonic()
        with self.console.status(f"[bold]{title}[/bold] ..."):
            result = action()
        self.console.print(f"[green]✓[/green] {title} [dim]({time.monotonic() - started:.1f} s)[/dim]")
        return result


def admin(host: Host, *args: str, input: str | None = None) -> str:
    argv = [str(BIN / "pcloud-server"), "admin", "--state-dir", SERVER_DIR, *args]
    return host.run(argv, input=input).stdout


def start_server(mesh: Mesh, host: Host) -> None:
    proc = host.spawn(
        "pcloud-server",
        [str(BIN / "pcloud-server"), "--state-dir", SERVER_DIR, "--listen", f"{host.ip}:{PORT}",
         "--hostname", host.name],
    )
    found = wait_for(lambda: re.search(r"join link: (\S+)", proc.log_text()), timeout=30,
                     what="the coordination server's join link")
    mesh.link = found.group(1)


def start_backend(mesh: Mesh, host: Host, *extra: str) -> None:
    mesh.backends[host.name] = host.spawn(
        "pcloud-backend",
        [str(BIN / "pcloud-backend"), "--driver", "userspace", "--hostname", host.name, *extra],
        env=WG_ENV,
    )


def status(host: Host) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(host.pcloud("status", "--json").stdout)
    return data


def ping(host: Host, ip: str) -> bool:
    return host.run(["ping", "-c1", "-W1", ip], check=False, timeout=5).returncode == 0


def running(host: Host) -> dict[str, Any] | None:
    res = host.pcloud("status", "--json", check=False)
    if res.returncode != 0:
        return None
    st: dict[str, Any] = json.loads(res.stdout)
    return st if st["state"] == "Running" and st.get("self") else None


def bootstrap(mesh: Mesh) -> None:
    lab = mesh.lab
    rpi111, rpi112, rpi113, laptop = (
        lab.add_host(n) for n in ("rpi111", "rpi112", "rpi113", "laptop")
    )
    mesh.hosts = [rpi111, rpi112, rpi113, laptop]
    mesh.console.print(
        "virtual hosts: " + ", ".join(f"{h.name} {h.ip}" for h in mesh.hosts), highlight=False
    )
    mesh.step("rpi111: coordination server on :8443", lambda: start_server(mesh, rpi111))

    def accounts() -> tuple[str, str]:
        admin(rpi111, "users", "create", "admin", "--admin", "--password-stdin",
              input="demo-admin-password\n")
        admin(rpi111, "users", "create", "alice", "--password-stdin", input="alice-password\n")
        server_key = json.loads(admin(rpi111, "--json", "auth-keys", "create", "--user", "admin",
                                      "--role", "server"))["key"]
        pi_key = json.loads(admin(rpi111, "--json", "auth-keys", "create", "--user", "admin",
                                  "--reusable", "--expiration", "1h"))["key"]
        return server_key, pi_key

    server_key, pi_key = mesh.step("accounts: admin, alice; pre-auth keys for the Pis", accounts)
    for host, key in ((rpi111, server_key), (rpi112, pi_key), (rpi113, pi_key)):
        key_file = host.path("/etc/pcloud/auth-key")
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)

    def headless(host: Host) -> None:
        mesh.up_at[host.name] = time.monotonic()
        start_backend(mesh, host, "--headless", "--server", mesh.link,
                      "--auth-key-file", "/etc/pcloud/auth-key")
        wait_for(lambda: running(host), timeout=30, what=f"{host.name} to be Running")

    mesh.step("rpi111: joins its own network as server (10.0.0.1)", lambda: headless(rpi111))
    mesh.step("rpi112, rpi113: headless, pre-auth key",
              lambda: [headless(h) for h in (rpi112, rpi113)])

    def first_pings() -> None:
        server_ip = status(rpi111)["self"]["address"]
        for host in (rpi112, rpi113):
            wait_for(lambda h=host: ping(h, server_ip), timeout=20,  # type: ignore[misc]
                     what=f"{host.name} -> rpi111 through the tunnel")
            mesh.first_ping[host.name] = time.monotonic() - mesh.up_at[host.name]

    mesh.step("rpi112, rpi113: first ping to rpi111 through the tunnel", first_pings)

    def laptop_login() -> None:
        start_backend(mesh, laptop)
        wait_for(lambda: laptop.pcloud("status", "--json", check=False).returncode == 0,
                 timeout=30, what="the laptop's backend socket")
        mesh.up_at[laptop.name] = time.monotonic()
        laptop.run(laptop.pcloud_argv("login", mesh.link, "--username", "alice"),
                   input="alice-password\n")
        server_ip = status(rpi111)["self"]["address"]
        wait_for(lambda: ping(laptop, server_ip), timeout=20, what="laptop -> rpi111")
        mesh.first_ping[laptop.name] = time.monotonic() - mesh.up_at[laptop.name]

    mesh.step("laptop: `pcloud login` as alice, then a ping to rpi111", laptop_login)


def mesh_table(mesh: Mesh) -> Table:
    table = Table(title="the mesh, as `pcloud status` sees it on each host")
    for col in ("host", "overlay IP", "role", "peer", "endpoint", "last handshake"):
        table.add_column(col)
    for host in mesh.hosts:
        st = status(host)
        me = st["self"]
        first = True
        for p in sorted(st["peers"], key=lambda p: p["hostname"]):
            hs = p.get("last_handshake")
            ago = "never"
            if hs:
                from datetime import UTC, datetime

                ago = f"{(datetime.now(UTC) - datetime.fromisoformat(hs)).total_seconds():.0f} s ago"
            table.add_row(
                host.name if first else "", me["address"] if first else "",
                me["role"] if first else "", f"{p['hostname']} ({p['address']})",
                p.get("endpoint") or "-", ago,
            )
            first = False
        table.add_section()
    return table


def ping_all(mesh: Mesh) -> tuple[int, int, list[str]]:
    addresses = {h.name: status(h)["self"]["address"] for h in mesh.hosts}
    ok, failed = 0, []
    for src in mesh.hosts:
        for dst in mesh.hosts:
            if src is dst:
                continue
            try:
                wait_for(lambda s=src, d=dst: ping(s, addresses[d.name]), timeout=10,  # type: ignore[misc]
                         what=f"{src.name} -> {dst.name}")
                ok += 1
            except Exception:  # noqa: BLE001 - reported in the summary
                failed.append(f"{src.name}->{dst.name}")
    total = len(mesh.hosts) * (len(mesh.hosts) - 1)
    return ok, total, failed


def run(keep: bool) -> int:
    # Piped output (CI logs) gets a readable width instead of rich's 80-column default.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    started = time.monotonic()
    console.rule("[bold]PCloud lab demo[/bold]")
    lab = Lab(keep=keep)
    summary = "mesh FAILED"
    code = 1
    with lab:
        mesh = Mesh(lab, console)
        try:
            bootstrap(mesh)
            console.print(mesh_table(mesh))
            ok, total, failed = mesh.step("ping every pair through the tunnels", lambda: ping_all(mesh))
            if not failed:
                boots = sorted(v for k, v in mesh.first_ping.items() if k != "laptop")
                summary = (f"mesh ok: {len(mesh.hosts)} hosts, {ok}/{total} pairs, "
                           f"up->first ping {mesh.first_ping['laptop']:.1f} s "
                           f"(headless boot->first ping {boots[-1]:.1f} s)")
                code = 0
            else:
                summary = f"mesh FAILED: {ok}/{total} pairs; no ping for {', '.join(failed)}"
        except Exception as exc:  # noqa: BLE001 - one clear line, then the logs
            summary = f"mesh FAILED: {exc}"
            console.print(lab.log_tails(), highlight=False, markup=False)
        if keep:
            console.print(
                "\nThe lab keeps running. Open a shell inside a host and look around:\n"
                "  .venv/bin/python -m tests.lab.shell laptop        # then: pcloud status\n"
                "  .venv/bin/python -m tests.lab.shell rpi111 pcloud status\n"
                "Remove it with:  bash .ci/demo down",
                highlight=False,
            )
        console.print(f"[dim]total {time.monotonic() - started:.1f} s[/dim]")
    console.print(f"[bold {'green' if code == 0 else 'red'}]{summary}[/]")
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n")[0])
    p.add_argument("action", nargs="?", choices=["run", "down"], default="run")
    p.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    args = p.parse_args(argv)
    if args.action == "down":
        from tests.lab.down import main as down_main

        return down_main([])
    return run(args.keep)


if __name__ == "__main__":
    sys.exit(main())
