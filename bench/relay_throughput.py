"""Relay throughput: iperf3 direct vs through rpi111's relay over UDP and over TCP, in one run.

`python -m bench.relay_throughput [--seconds 8]` builds the lab's sites: rpi111 (coordination
server, so its relay) behind the home router, rpi112 and rpi113 on the home LAN (a direct pair),
two phones behind endpoint-dependent NATs (relayed over UDP) and a desk whose office drops all
UDP (relayed over the WebSocket on the HTTPS port). iperf3 runs through each pair in turn, twice,
alternating; the relay's CPU time (utime + stime of the `pcloud-server` process, which runs the
relay in its event loop) is read around each relayed run. Printed: Mbit/s per path, the ratio to
direct (DESIGN section 9 target: >= 0.5 over UDP), and relay CPU seconds per Gbit relayed.
Figures, not assertions.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from bench.procfs import cpu_s
from bench.tunnel_throughput import iperf
from tests.lab import Host, Lab, wait_for
from tests.lab.home import headless, home_mesh, peer, public_link
from tests.lab.mesh import Mesh


def on_path(mesh: Mesh, a: Host, b: Host, path: str) -> bool:
    return str(peer(mesh, a, b.name)["path"]).startswith(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.relay_throughput", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=int, default=8)
    args = p.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=120)
    results: dict[str, list[tuple[float, float]]] = {"direct": [], "udp": [], "tcp": []}
    with Lab() as lab:
        (_rpi111, rpi112, rpi113), sites, mesh, key = home_mesh(lab, "rpi111", "rpi112", "rpi113")
        link = public_link(mesh)
        phone = sites.add_host("mobile", "phone")
        phone2 = sites.add_host("mobile2", "phone2")
        desk = sites.add_host("office", "desk")
        for h in (rpi112, rpi113):
            headless(mesh, h, mesh.link, key)
        for h in (phone, phone2, desk):
            headless(mesh, h, link, key)
        pairs: dict[str, tuple[Host, Host, str]] = {
            "direct": (rpi112, rpi113, "direct "),
            "udp": (phone, phone2, "relay rpi111"),
            "tcp": (desk, phone2, "relay rpi111 (tcp)"),
        }
        for a, b, path in pairs.values():
            mesh.wait_running(a)
            mesh.wait_running(b)
            mesh.wait_ping(a, mesh.address(b), timeout=60)
            wait_for(
                lambda a=a, b=b, path=path: on_path(mesh, a, b, path),  # type: ignore[misc]
                timeout=30,
                what=f"{a.name} -> {b.name} on {path}",
            )
        assert mesh.server_proc is not None
        pid = mesh.server_proc.pid
        console.print("all paths up; running iperf3 ...")
        for _ in range(2):  # alternate so no path always runs on a warmer machine
            for name, (a, b, _path) in pairs.items():
                before = cpu_s(pid)
                mbit = iperf(a, b, mesh.address(b), args.seconds)
                results[name].append((mbit, cpu_s(pid) - before))
    best = {k: max(v) for k, v in results.items()}
    direct = best["direct"][0]
    table = Table(title=f"iperf3 through WireGuard, {args.seconds} s runs (best of 2)")
    for col in ("path", "Mbit/s", "ratio to direct", "relay CPU s per Gbit", "all runs"):
        table.add_column(col)
    for name, label in (
        ("direct", "direct (home LAN pair)"),
        ("udp", "relay rpi111 over UDP (two symmetric NATs)"),
        ("tcp", "relay rpi111 over TCP (office, UDP blocked)"),
    ):
        mbit, cpu = best[name]
        gbit = mbit * args.seconds / 1000
        per_gbit = f"{cpu / gbit:.2f}" if name != "direct" and gbit else "-"
        runs = " ".join(f"{m:.0f}" for m, _ in results[name])
        table.add_row(
            label, f"{mbit:.0f}", f"{mbit / direct:.2f}" if direct else "-", per_gbit, runs
        )
    console.print(table)
    ratio = best["udp"][0] / direct if direct else float("nan")
    verdict = "PASS" if ratio >= 0.5 else "MISS"
    console.print(
        f"relay throughput over UDP: {best['udp'][0]:.0f} vs direct {direct:.0f} Mbit/s, ratio "
        f"{ratio:.2f} (target >= 0.5: {verdict}); over TCP ratio {best['tcp'][0] / direct:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
