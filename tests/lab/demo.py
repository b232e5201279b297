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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from rich.console import Console
from rich.table import Table

from tests.lab import Host, Lab
from tests.lab.mesh import Mesh

T = TypeVar("T")


@dataclass
class Demo:
    mesh: Mesh
    console: Console
    hosts: list[Host] = field(default_factory=list)
    up_at: dict[str, float] = field(default_factory=dict)
    first_ping: dict[str, float] = field(default_factory=dict)

    def step(self, title: str, action: Callable[[], T]) -> T:
        started = time.monotonic()
        with self.console.status(f"[bold]{title}[/bold] ..."):
            result = action()
        took = time.monotonic() - started
        self.console.print(f"[green]✓[/green] {title} [dim]({took:.1f} s)[/dim]")
        return result


def bootstrap(demo: Demo) -> None:
    mesh = demo.mesh
    rpi111, rpi112, rpi113, laptop = (
        mesh.lab.add_host(n) for n in ("rpi111", "rpi112", "rpi113", "laptop")
    )
    demo.hosts = [rpi111, rpi112, rpi113, laptop]
    demo.console.print(
        "virtual hosts: " + ", ".join(f"{h.name} {h.ip}" for h in demo.hosts), highlight=False
    )
    demo.step("rpi111: coordination server on :8443", lambda: mesh.start_server(rpi111))

    def accounts() -> tuple[str, str]:
        mesh.create_user("admin", "demo-admin-password", admin=True)
        mesh.create_user("alice", "alice-password")
        server_key = mesh.auth_key("admin", role="server")
        pi_key = mesh.auth_key("admin", reusable=True)
        return server_key, pi_key

    server_key, pi_key = demo.step("accounts: admin, alice; pre-auth keys for the Pis", accounts)

    def headless(host: Host, key: str) -> None:
        demo.up_at[host.name] = time.monotonic()
        mesh.join_headless(host, key)

    demo.step(
        "rpi111: joins its own network as server (10.0.0.1)", lambda: headless(rpi111, server_key)
    )
    demo.step(
        "rpi112, rpi113: headless, pre-auth key",
        lambda: [headless(h, pi_key) for h in (rpi112, rpi113)],
    )

    def first_pings() -> None:
        server_ip = mesh.address(rpi111)
        for host in (rpi112, rpi113):
            mesh.wait_ping(host, server_ip)
            demo.first_ping[host.name] = time.monotonic() - demo.up_at[host.name]

    demo.step("rpi112, rpi113: first ping to rpi111 through the tunnel", first_pings)

    def laptop_login() -> None:
        mesh.start_backend(laptop)
        demo.up_at[laptop.name] = time.monotonic()
        mesh.login(laptop, user="alice", password="alice-password")
        mesh.wait_ping(laptop, mesh.address(rpi111))
        demo.first_ping[laptop.name] = time.monotonic() - demo.up_at[laptop.name]

    demo.step("laptop: `pcloud login` as alice, then a ping to rpi111", laptop_login)


def mesh_table(demo: Demo) -> Table:
    table = Table(title="the mesh, as `pcloud status` sees it on each host")
    for col in ("host", "overlay IP", "role", "peer", "endpoint", "last handshake"):
        table.add_column(col)
    for host in demo.hosts:
        st = demo.mesh.status(host)
        me = st["self"]
        first = True
        for p in sorted(st["peers"], key=lambda p: p["hostname"]):
            hs = p.get("last_handshake")
            ago = "never"
            if hs:
                ago = (
                    f"{(datetime.now(UTC) - datetime.fromisoformat(hs)).total_seconds():.0f} s ago"
                )
            table.add_row(
                host.name if first else "",
                me["address"] if first else "",
                me["role"] if first else "",
                f"{p['hostname']} ({p['address']})",
                p.get("endpoint") or "-",
                ago,
            )
            first = False
        table.add_section()
    return table


def run(keep: bool) -> int:
    # Piped output (CI logs) gets a readable width instead of rich's 80-column default.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    started = time.monotonic()
    console.rule("[bold]PCloud lab demo[/bold]")
    lab = Lab(keep=keep)
    summary = "mesh FAILED"
    code = 1
    with lab:
        demo = Demo(Mesh(lab), console)
        try:
            bootstrap(demo)
            console.print(mesh_table(demo))
            ok, total, failed = demo.step(
                "ping every pair through the tunnels", lambda: demo.mesh.ping_all(demo.hosts)
            )
            if not failed:
                boots = sorted(v for k, v in demo.first_ping.items() if k != "laptop")
                summary = (
                    f"mesh ok: {len(demo.hosts)} hosts, {ok}/{total} pairs, "
                    f"up->first ping {demo.first_ping['laptop']:.1f} s "
                    f"(headless boot->first ping {boots[-1]:.1f} s)"
                )
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
