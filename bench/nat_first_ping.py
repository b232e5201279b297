"""Login -> first ping, per NAT pair kind, on the lab's sites (DESIGN section 9).

`python -m bench.nat_first_ping [--runs 3]` builds the sites lab (tests/lab/sites.py): rpi111
(coordination server, WireGuard on the port the home router forwards) and rpi112 at home, a
laptop at the cafe (endpoint-independent NAT), a phone on the mobile network (endpoint-dependent
NAT) and a desk at the office (UDP blocked). Each run starts the measured device's backend with a
fresh state, then times from `pcloud login LINK --auth-key KEY` (a new node) to the first ping
through the tunnel that answers (one try every ~0.2 s), for each pair kind:

- LAN: rpi113 -> rpi111 on the home LAN;
- cafe -> home, forwarded port: laptop -> rpi111;
- cafe x home, hole punched: laptop -> rpi112 (no forward for rpi112);
- mobile -> home, forwarded port: phone -> rpi111;
- relayed kinds (mobile x cafe, office -> home): through rpi111's relay, which a peer takes
  after one short direct try (backend/relay/paths.py; at once where UDP is blocked); each is
  tried for `--relay-wait` seconds (40) before it shows as "no path".

Then the path each pair ends on (`pcloud status`, pinging meanwhile so a direct probe has
traffic to judge by) and when it got there: a relay that came first must not keep a pair that
can be direct. Target: direct kinds under 3 s, on a direct path (relayed: under 5 s).
Figures, not assertions: PASS/MISS per kind; the exit code is 0 unless the run failed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from tests.lab import Host, Lab, wait_for
from tests.lab.home import PUBLIC_URL, home_mesh
from tests.lab.mesh import Mesh
from tests.lab.sites import HOME_PUBLIC, WG_PORT

TARGET_DIRECT_S = 3.0
TARGET_RELAY_S = 5.0
SETTLE_S = 20.0  # how long a pair is given to reach the path its NAT kinds predict


@dataclass(frozen=True)
class Kind:
    name: str
    device: str  # whose backend is (re)started and timed
    target: str  # the peer it pings
    relayed: bool = False  # needs the relay: no direct path can exist


KINDS = [
    Kind("LAN", "rpi113", "rpi111"),
    Kind("cafe -> home, forwarded port", "laptop", "rpi111"),
    Kind("cafe x home, hole punched", "laptop", "rpi112"),
    Kind("mobile -> home, forwarded port", "phone", "rpi111"),
    Kind("mobile x cafe (relay)", "phone", "laptop", relayed=True),
    Kind("office -> home (relay over TCP)", "desk", "rpi111", relayed=True),
]


def fresh_backend(mesh: Mesh, host: Host, *extra: str) -> None:
    """Stop `host`'s backend, forget its node and start it again, logged out."""
    mesh.stop_backend(host)
    state = host.path("/var/lib/pcloud")
    for child in state.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
    mesh.start_backend(host, *extra)


def login(host: Host, link: str, key: str) -> float:
    """`pcloud login LINK --auth-key KEY` (a new node); the monotonic time it was started."""
    started = time.monotonic()
    host.run(host.pcloud_argv("login", link, "--auth-key", key), timeout=60)
    return started


def quick_ping(host: Host, ip: str) -> bool:
    # 0.2 s per try: the figure's resolution (ping -W takes fractions since iputils 20210202).
    return host.run(["ping", "-c1", "-W0.2", ip], check=False, timeout=5).returncode == 0


def first_ping(src: Host, address: str, started: float, timeout: float) -> float | None:
    try:
        wait_for(lambda: quick_ping(src, address), timeout=timeout, interval=0.01, what="a ping")
    except Exception:  # noqa: BLE001 - a pair with no path is a figure too
        return None
    return time.monotonic() - started


@dataclass(frozen=True)
class Settled:
    path: str  # the last path status showed
    took: float | None  # login -> on the predicted path (None: not within SETTLE_S)


def path_to(mesh: Mesh, src: Host, address: str) -> str:
    """The path `src` shows for the peer at `address` (by address: every run's login leaves an
    offline node of the same hostname behind)."""
    for p in mesh.status(src)["peers"]:
        if p["address"] == address:
            return str(p["path"])
    return "not a peer"


def settled_path(mesh: Mesh, src: Host, kind: Kind, address: str) -> str | None:
    """The path `src` shows for the kind's peer when it is the predicted one, else None."""
    path = path_to(mesh, src, address)
    return path if path.startswith("relay" if kind.relayed else "direct") else None


def settle(mesh: Mesh, src: Host, kind: Kind, address: str, started: float) -> Settled:
    """Ping until the pair is on the predicted path (or SETTLE_S passed)."""

    def on_path() -> str | None:
        quick_ping(src, address)
        return settled_path(mesh, src, kind, address)

    try:
        path = wait_for(on_path, timeout=SETTLE_S, interval=0.1, what="the predicted path")
    except Exception:  # noqa: BLE001 - a pair that never got there is a figure too
        return Settled(path_to(mesh, src, address), None)
    return Settled(path, time.monotonic() - started)


def measure(
    runs: int, relay_wait: float, console: Console
) -> tuple[dict[str, list[float | None]], dict[str, list[Settled]]]:
    out: dict[str, list[float | None]] = {k.name: [] for k in KINDS}
    paths: dict[str, list[Settled]] = {k.name: [] for k in KINDS}
    with Lab() as lab:
        pis, sites, mesh, key = home_mesh(lab, "rpi111", "rpi112", "rpi113", expiration="2h")
        rpi111, rpi112, rpi113 = pis
        fresh_backend(
            mesh, rpi111,
            "--listen-port", str(WG_PORT), "--advertise-endpoint", f"{HOME_PUBLIC}:{WG_PORT}",
        )  # fmt: skip
        login(rpi111, mesh.link, key)
        mesh.wait_running(rpi111)
        fresh_backend(mesh, rpi112)
        login(rpi112, mesh.link, key)
        mesh.wait_running(rpi112)
        public = mesh.link.replace(mesh.link.split("/#")[0], PUBLIC_URL)
        hosts = {
            "rpi111": rpi111, "rpi112": rpi112, "rpi113": rpi113,
            "laptop": sites.add_host("cafe", "laptop"),
            "phone": sites.add_host("mobile", "phone"),
            "desk": sites.add_host("office", "desk"),
        }  # fmt: skip
        links: dict[str, str] = {"rpi113": mesh.link}
        # Every device logs in once, so each kind's target is a running peer.
        for name in ("laptop", "phone", "desk"):
            fresh_backend(mesh, hosts[name])
            login(hosts[name], public, key)
        console.print("sites lab ready")
        for run in range(runs):
            for device in dict.fromkeys(k.device for k in KINDS):
                kinds = [k for k in KINDS if k.device == device]
                targets = {k.target: mesh.address(hosts[k.target]) for k in kinds}
                fresh_backend(mesh, hosts[device])
                src = hosts[device]
                started = login(src, links.get(device, public), key)
                at_ping: dict[str, Settled] = {}
                for kind in kinds:
                    wait = relay_wait if kind.relayed else 20.0
                    took = first_ping(src, targets[kind.target], started, wait)
                    out[kind.name].append(took)
                    # The path right after the first ping: most pairs are on theirs already.
                    path = settled_path(mesh, src, kind, targets[kind.target])
                    if took is not None and path is not None:
                        at_ping[kind.name] = Settled(path, took)
                for kind in kinds:
                    settled = at_ping.get(kind.name)
                    if settled is None:
                        settled = settle(mesh, src, kind, targets[kind.target], started)
                    paths[kind.name].append(settled)
            console.print(f"run {run + 1}/{runs} done")
    return out, paths


def path_figure(settled: list[Settled]) -> str:
    """The paths seen (hosts' ports dropped) and the median login -> predicted path."""
    shown = sorted({s.path.split(":")[0] for s in settled})
    got = [s.took for s in settled if s.took is not None]
    missed = len(settled) - len(got)
    when = f"{statistics.median(got):.2f} s" if got else "never"
    return ", ".join(shown) + f" ({when}" + (f", {missed} not" if missed else "") + ")"


def verdict(kind: Kind, values: list[float | None], settled: list[Settled]) -> tuple[str, str, str]:
    got = [v for v in values if v is not None]
    target = TARGET_RELAY_S if kind.relayed else TARGET_DIRECT_S
    on_path = [s.took for s in settled if s.took is not None]
    if not kind.relayed and (len(on_path) < len(settled) or max(on_path) >= target):
        shown = f"{statistics.median(got):.2f} s" if got else "no path"
        return shown, f"< {target:g} s", "MISS (path)"
    if not got:
        return "no path", f"< {target:g} s", "MISS" if not kind.relayed else "relay n/a"
    median = statistics.median(got)
    shown = f"{median:.2f} s" + (
        f" ({len(values) - len(got)} no path)" if len(got) < len(values) else ""
    )
    return shown, f"< {target:g} s", "PASS" if median < target else "MISS"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--relay-wait", type=float, default=40.0,
                   help="seconds a relayed kind is given before it counts as no path")  # fmt: skip
    args = p.parse_args(argv)
    console = Console(highlight=False, width=150)  # the table's 6 columns on one line each
    results, paths = measure(args.runs, args.relay_wait, console)
    table = Table(title=f"login -> first ping per NAT pair kind (median of {args.runs})")
    for col in ("pair kind", "device -> peer", "login -> first ping", "target", "",
                "path (login -> on it)"):  # fmt: skip
        table.add_column(col)
    for kind in KINDS:
        shown, target, mark = verdict(kind, results[kind.name], paths[kind.name])
        table.add_row(
            kind.name, f"{kind.device} -> {kind.target}", shown, target, mark,
            path_figure(paths[kind.name]),
        )  # fmt: skip
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
