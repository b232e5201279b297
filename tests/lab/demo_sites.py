"""The lab demo's sites story (`bash .ci/demo --sites`): PCloud between networks, behind NATs.

Seven virtual hosts at the lab's sites: rpi111 (the coordination server and relay), rpi112 and
rpi113 on the home LAN behind the home router, which forwards only the server's HTTPS port and
one UDP port to rpi111 (what the README tells a user to forward); a laptop at a cafe
(endpoint-independent NAT), two phones on mobile networks (endpoint-dependent, "symmetric"
NATs) and a desk in an office that drops all outgoing UDP. Every host logs in through the public
join link; then every pair pings through the overlay at once, and a table shows the path each
side's `pcloud status` shows (`direct ADDR:PORT`, `relay rpi111`, `relay rpi111 (tcp)`) next to
the path the two sites' NAT kinds predict (tests/lab/site_paths.py). The same story is asserted
by tests/e2e/test_site_grid.py.
"""

from __future__ import annotations

import asyncio
import time
from itertools import permutations

from rich.console import Console
from rich.table import Table

from tests.lab import Host, Lab
from tests.lab.grid import Pair, PathWatch, first_ping, running
from tests.lab.home import headless, home_mesh, public_link
from tests.lab.site_paths import Prediction, home_spot, predict, site_spot
from tests.lab.sites import HOME_PUBLIC, WG_PORT

OUTSIDE = {"laptop": "cafe", "phone": "mobile", "phone2": "mobile2", "desk": "office"}
RELAY = "rpi111"
DEADLINE_S = 60.0


async def _pairs(
    hosts: list[Host], expected: dict[Pair, Prediction]
) -> tuple[PathWatch, dict[Pair, float | None]]:
    statuses = await asyncio.gather(*(running(h) for h in hosts))
    address = {h.name: st["self"]["address"] for h, st in zip(hosts, statuses, strict=True)}
    by_name = {h.name: h for h in hosts}
    watch = PathWatch(hosts, {pair: p.path for pair, p in expected.items()})
    pings = [first_ping(by_name[a], address[b], DEADLINE_S) for a, b in expected]
    _, *times = await asyncio.gather(watch.run(DEADLINE_S), *pings)
    return watch, dict(zip(expected, times, strict=True))


def _table(
    expected: dict[Pair, Prediction], watch: PathWatch, firsts: dict[Pair, float | None]
) -> Table:
    table = Table(title="every pair, through the overlay (seconds from every host Running)")
    for column in ("pair", "why", "predicted", "path shown", "first ping"):
        table.add_column(column)
    for pair, want in expected.items():
        shown, _ = watch.seen.get(pair, (f"{watch.last.get(pair, '-')} [red](off)[/red]", 0.0))
        took = firsts[pair]
        table.add_row(
            f"{pair[0]} -> {pair[1]}", want.why, want.path, shown,
            f"{took:.1f}" if took is not None else "[red]none[/red]",
        )  # fmt: skip
    return table


def run_sites(console: Console, keep: bool) -> int:
    """The story; 0 when every pair pings on its predicted path."""
    started = time.monotonic()
    console.rule("[bold]PCloud lab demo: sites behind NATs[/bold]")
    lab = Lab(keep=keep, announce_keep=False)
    summary, code = "sites FAILED", 1
    with lab:
        try:
            with console.status("[bold]building the sites and the home server[/bold] ..."):
                (rpi111, rpi112, rpi113), sites, mesh, key = home_mesh(
                    lab, "rpi111", "rpi112", "rpi113"
                )
                link = public_link(mesh)
                outside = {name: sites.add_host(site, name) for name, site in OUTSIDE.items()}
            console.print(f"[green]✓[/green] sites up; the public join link: {link}")
            hosts = [rpi111, rpi112, rpi113, *outside.values()]
            spots = {
                "rpi111": home_spot("rpi111", rpi111.ip, WG_PORT),
                "rpi112": home_spot("rpi112", rpi112.ip),
                "rpi113": home_spot("rpi113", rpi113.ip),
                **{n: site_spot(n, site, outside[n].ip) for n, site in OUTSIDE.items()},
            }
            forward = ("--listen-port", str(WG_PORT), "--advertise-endpoint",
                       f"{HOME_PUBLIC}:{WG_PORT}")  # fmt: skip
            headless(mesh, rpi111, mesh.link, key, *forward, wait=False)
            for h in (rpi112, rpi113):
                headless(mesh, h, mesh.link, key, wait=False)
            for h in outside.values():
                headless(mesh, h, link, key, wait=False)
            expected = {
                (a, b): predict(spots[a], spots[b], RELAY) for a, b in permutations(spots, 2)
            }
            with console.status("[bold]logging in and pinging every pair[/bold] ..."):
                watch, firsts = asyncio.run(_pairs(hosts, expected))
            console.print(_table(expected, watch, firsts))
            pinged = sum(t is not None for t in firsts.values())
            on_path = len(watch.seen)
            relayed = sum(p.path.startswith("relay") for p in expected.values())
            if pinged == on_path == len(expected):
                summary = (
                    f"sites ok: {len(hosts)} hosts, {pinged}/{len(expected)} pairs ping, "
                    f"{len(expected) - relayed} direct and {relayed} relayed as their NATs "
                    f"predict, all within {max(t for _, t in watch.seen.values()):.1f} s"
                )
                code = 0
            else:
                summary = (
                    f"sites FAILED: {pinged}/{len(expected)} pairs ping, "
                    f"{on_path}/{len(expected)} on their predicted path"
                )
        except Exception as exc:  # noqa: BLE001 - one clear line, then the logs
            summary = f"sites FAILED: {exc}"
            console.print(lab.log_tails(), highlight=False, markup=False)
        console.print(f"[dim]total {time.monotonic() - started:.1f} s[/dim]")
    console.print(f"[bold {'green' if code == 0 else 'red'}]{summary}[/]")
    if keep:
        console.print(
            "the lab stays up: enter a host with `python -m tests.lab.shell HOST`; "
            "remove it with `bash .ci/demo down`",
            highlight=False,
            markup=False,
        )
    return code
