"""The lab demo (the README's main command): the seed's mesh on virtual hosts, end to end.

`python -m tests.lab.demo [--keep]` builds four virtual hosts on one machine (network namespaces
on a bridged 192.168.0.0/24 LAN) and tells the seed's story: `pcloud install-server` on rpi111
(coordination server, 10.0.0.1, K3s as the first server, the first admin), rpi112 and rpi113 join
as clients with a pre-auth key and become servers with `pcloud join-server` (their K3s joins
10.0.0.1:6443 through the tunnel), a laptop logs in as a user; then it prints the mesh as
`pcloud status` on each host sees it, the cluster as `k3s kubectl get nodes -o wide` on rpi111
sees it, pings every pair through the WireGuard tunnels and ends with one summary line. K3s is
the stand-in (`tests/support/k3s_standin`): real K3s cannot run here. `--keep` leaves the lab running (enter a host with `python -m tests.lab.shell
HOST`) and prints, once, what is needed to use it: the join link, the accounts' passwords and the
one command that removes it (`bash .ci/demo down`).
"""

from __future__ import annotations

import argparse
import re
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
from tests.support.k3s_standin import write_wrapper

ROOT = "/var/lib/pcloud/root"  # each host's system root for K3s (private to the host)
SERVER_ARGS = ("--k3s-root", ROOT, "--service-manager", "child")
K3S = "/etc/pcloud/k3s"  # the stand-in k3s, given to the jobs as --k3s-binary
ADMIN_PASSWORD = "demo-admin-password"
ALICE_PASSWORD = "alice-password"

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

    def backends() -> None:
        for host in (rpi111, rpi112, rpi113):
            write_wrapper(host.path(K3S))
            mesh.start_backend(host, *SERVER_ARGS)
        mesh.start_backend(laptop)

    demo.step("pcloud-backend on every host", backends)

    def install() -> None:
        argv = rpi111.pcloud_argv(
            "install-server",
            "--listen",
            f"{rpi111.ip}:8443",
            "--k3s-binary",
            K3S,
            "--admin-user",
            "admin",
        )
        out = rpi111.run(argv, input=ADMIN_PASSWORD + "\n", timeout=240).stdout
        m = re.search(r"Join link for the next devices: (\S+)", out)
        assert m, out
        mesh.server, mesh.link = rpi111, m.group(1)

    demo.step("rpi111: `pcloud install-server` (server, 10.0.0.1, K3s, admin)", install)

    def accounts() -> tuple[str, str]:
        mesh.create_user("alice", ALICE_PASSWORD)
        return mesh.auth_key("admin", reusable=True), mesh.auth_key(
            "admin", reusable=True, role="server"
        )

    pi_key, server_key = demo.step("accounts: alice; pre-auth keys for the Pis", accounts)

    def clients() -> None:
        for host in (rpi112, rpi113):
            demo.up_at[host.name] = time.monotonic()
            mesh.login(host, key=pi_key)
        for host in (rpi112, rpi113):
            mesh.wait_ping(host, "10.0.0.1")
            demo.first_ping[host.name] = time.monotonic() - demo.up_at[host.name]

    demo.step("rpi112, rpi113: `pcloud login` as clients, first ping to 10.0.0.1", clients)

    def join_servers() -> None:
        for host in (rpi112, rpi113):
            host.run(
                host.pcloud_argv("join-server", "--auth-key", server_key, "--k3s-binary", K3S),
                timeout=180,
            )

    demo.step("rpi112, rpi113: `pcloud join-server` (K3s joins 10.0.0.1:6443 via wg)", join_servers)

    def laptop_login() -> None:
        demo.up_at[laptop.name] = time.monotonic()
        mesh.login(laptop, user="alice", password=ALICE_PASSWORD)
        mesh.wait_ping(laptop, mesh.address(rpi111))
        demo.first_ping[laptop.name] = time.monotonic() - demo.up_at[laptop.name]

    demo.step("laptop: `pcloud login` as alice, then a ping to rpi111", laptop_login)


def kubectl_nodes(demo: Demo) -> tuple[str, int]:
    """`k3s kubectl get nodes -o wide` on rpi111 (the stand-in's answer) and the Ready count."""
    rpi111 = demo.hosts[0]
    out = rpi111.run(
        [f"{ROOT}/usr/local/bin/k3s", "kubectl", "get", "nodes", "-o", "wide"],
        env={"KUBECONFIG": f"{ROOT}/etc/rancher/k3s/k3s.yaml"},
    ).stdout
    return out, sum(1 for line in out.splitlines() if " Ready " in f"{line} ")


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


def kept_lab_note(link: str, hosts: list[Host]) -> str:
    """What a person needs to use the kept lab, said once: how to enter a host, the join link
    and passwords to log back in after `pcloud logout`, and the one command that removes it."""
    shell = ".venv/bin/python -m tests.lab.shell"
    return "\n".join(
        [
            "The lab keeps running: " + ", ".join(f"{h.name} {h.ip}" for h in hosts),
            f"  enter a host:  {shell} laptop          # then: pcloud status",
            f"  one command:   {shell} rpi111 pcloud status",
            f"  join link:     {link or '(install-server did not finish)'}",
            f"  accounts:      admin / {ADMIN_PASSWORD} (admin), alice / {ALICE_PASSWORD}",
            f"  log in again:  echo {ALICE_PASSWORD} | pcloud login '{link}' --username alice",
            "  admin (rpi111): pcloud-server admin nodes list",
            "  remove it:     bash .ci/demo down",
        ]
    )


def run(keep: bool) -> int:
    # Piped output (CI logs) gets a readable width instead of rich's 80-column default.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    started = time.monotonic()
    console.rule("[bold]PCloud lab demo[/bold]")
    lab = Lab(keep=keep, announce_keep=False)
    summary = "mesh FAILED"
    code = 1
    with lab:
        demo = Demo(Mesh(lab), console)
        try:
            bootstrap(demo)
            console.print(mesh_table(demo))
            nodes, ready = kubectl_nodes(demo)
            console.print("[bold]$ k3s kubectl get nodes -o wide[/bold]  (on rpi111)")
            console.print(nodes.rstrip(), highlight=False, markup=False)
            ok, total, failed = demo.step(
                "ping every pair through the tunnels", lambda: demo.mesh.ping_all(demo.hosts)
            )
            if not failed and ready == 3:
                boots = sorted(v for k, v in demo.first_ping.items() if k != "laptop")
                summary = (
                    f"mesh ok: {len(demo.hosts)} hosts, {ok}/{total} pairs, "
                    f"{ready} K3s servers Ready, "
                    f"up->first ping {demo.first_ping['laptop']:.1f} s "
                    f"(Pi login->first ping {boots[-1]:.1f} s)"
                )
                code = 0
            elif not failed:
                summary = f"mesh FAILED: {ready}/3 K3s servers Ready"
            else:
                summary = f"mesh FAILED: {ok}/{total} pairs; no ping for {', '.join(failed)}"
        except Exception as exc:  # noqa: BLE001 - one clear line, then the logs
            summary = f"mesh FAILED: {exc}"
            console.print(lab.log_tails(), highlight=False, markup=False)
        console.print(f"[dim]total {time.monotonic() - started:.1f} s[/dim]")
    console.print(f"[bold {'green' if code == 0 else 'red'}]{summary}[/]")
    if keep:  # last, so it is what stays on the screen
        note = kept_lab_note(demo.mesh.link, demo.hosts)
        console.print(note, highlight=False, markup=False, soft_wrap=True)
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n")[0])
    p.add_argument("action", nargs="?", choices=["run", "down"], default="run")
    p.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    p.add_argument(
        "--sites",
        action="store_true",
        help="the sites story: hosts behind NATs, direct and relayed",
    )
    args = p.parse_args(argv)
    if args.action == "down":
        from tests.lab.down import main as down_main

        return down_main([])
    if args.sites:
        from tests.lab.demo_sites import run_sites

        return run_sites(Console() if sys.stdout.isatty() else Console(width=120), args.keep)
    return run(args.keep)


if __name__ == "__main__":
    sys.exit(main())
