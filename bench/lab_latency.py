"""Lab latency: `pcloud up` -> first ping, and a new peer configured on every other lab host.

`python -m bench.lab_latency [--runs 5] [--hosts 3]` builds a lab (coordination server on rpi111,
`--hosts` other backends, real wireguard-go), then measures, median of `--runs`:

- up -> first ping: `pcloud down` on the laptop, then the time from `pcloud up` until its first
  ping through the tunnel to 10.0.0.x answers (DESIGN section 7 target: under 3 s);
- new peer everywhere: `pcloud logout` then `pcloud login` of the laptop (a new node each time),
  and the time from the login returning (the device is registered) until every other host's
  WireGuard interface holds its public key (read with `wg show`; target: under 1 s).

Figures, not assertions: it prints PASS/MISS per target and exits 0 unless the run failed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from rich.console import Console
from rich.table import Table

from tests.lab import Host, Lab, wait_for
from tests.lab.mesh import Mesh, ping

TARGET_UP_S = 3.0
TARGET_PEER_S = 1.0


def wg_peers(host: Host) -> set[str]:
    res = host.run(["wg", "show", "pcloud0", "peers"], check=False, timeout=5)
    return set(res.stdout.split()) if res.returncode == 0 else set()


def measure(runs: int, n_hosts: int, console: Console) -> dict[str, list[float]]:
    up_times: list[float] = []
    peer_times: list[float] = []
    with Lab() as lab:
        mesh = Mesh(lab)
        mesh.start_server(lab.add_host("rpi111"))
        mesh.create_user("admin", "admin-password", admin=True)
        key = mesh.auth_key("admin", reusable=True, expiration="2h")
        others = [lab.add_host(f"rpi{112 + i}") for i in range(n_hosts)]
        for host in others:
            mesh.join_headless(host, key)
        laptop = lab.add_host("laptop")
        mesh.login(laptop, key=key)
        target = mesh.address(others[0])
        mesh.wait_ping(laptop, target)
        console.print(f"lab ready: {len(others) + 1} hosts around the server")

        for i in range(runs):
            laptop.pcloud("down")
            wait_for(lambda: not ping(laptop, target), timeout=10, what="the tunnel to go down")
            started = time.monotonic()
            laptop.pcloud("up")
            wait_for(lambda: ping(laptop, target, wait_s=1), timeout=20, what="first ping after up")
            up_times.append(time.monotonic() - started)
            console.print(f"run {i + 1}: up -> first ping {up_times[-1]:.2f} s")

        for i in range(runs):
            laptop.pcloud("logout")
            old = mesh.status(laptop)
            gone_key = (old.get("self") or {}).get("public_key")
            wait_for(
                lambda gone=gone_key: all(gone not in wg_peers(h) for h in others),
                timeout=15,
                what="the laptop's old peer entry to leave every host",
            )
            mesh.login(laptop, key=key)
            registered = time.monotonic()
            new_key = mesh.status(laptop)["self"]["public_key"]
            wait_for(
                lambda new=new_key: all(new in wg_peers(h) for h in others),
                timeout=15,
                interval=0.01,
                what="the new peer on every host",
            )
            peer_times.append(time.monotonic() - registered)
            console.print(
                f"run {i + 1}: new peer on all {len(others)} hosts {peer_times[-1]:.2f} s"
            )
    return {"up": up_times, "peer": peer_times}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.lab_latency", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--hosts", type=int, default=3, help="backends besides the laptop")
    args = p.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=120)
    figures = measure(args.runs, args.hosts, console)
    table = Table(title="lab latency (median of runs)")
    for col in ("figure", "median", "min", "max", "target", "verdict"):
        table.add_column(col)
    rows = [
        ("pcloud up -> first ping", figures["up"], TARGET_UP_S),
        ("new peer configured on every other host", figures["peer"], TARGET_PEER_S),
    ]
    for name, values, target in rows:
        med = statistics.median(values)
        table.add_row(
            name,
            f"{med:.2f} s",
            f"{min(values):.2f} s",
            f"{max(values):.2f} s",
            f"< {target:.0f} s",
            "PASS" if med < target else "MISS",
        )
    console.print(table)
    up, peer = statistics.median(figures["up"]), statistics.median(figures["peer"])
    console.print(
        f"lab latency: up->first ping {up:.2f} s, new peer everywhere {peer:.2f} s "
        f"(median of {args.runs})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
