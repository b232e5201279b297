"""The fan-out benchmark's report: the tables (rich) and the one-line summary.

`report` prints the setup figures, the changes, the floor comparison and the DESIGN section 7
targets to the console, and returns the summary line `python -m bench.server_fanout` ends with.
"""

from __future__ import annotations

import statistics

from .fanout_results import Results
from .fanout_servers import per_server_table


def report(res: Results) -> str:
    from rich.console import Console
    from rich.table import Table

    # Wide enough for the change table even when piped to a file (rich would wrap at 80).
    console = Console(width=max(Console().width, 150))
    store = res.store if res.store == "sqlite" else f"etcd ({res.etcd_members} member(s))"
    setup = Table(
        title=f"pcloud-server fan-out on {store}: {res.nodes} nodes, {res.users} users, "
        f"{res.servers} servers, {res.procs} client processes"
    )
    setup.add_column("phase")
    setup.add_column("figure", justify="right")
    setup.add_row("server RSS at start", f"{res.rss_start_mb:.0f} MB")
    setup.add_row("users + auth keys", f"{res.users_s:.1f} s")
    setup.add_row("registration rate", f"{res.reg_rate:.0f} nodes/s")
    setup.add_row(
        "registration latency p50 / p99", f"{res.reg_p50_ms:.1f} / {res.reg_p99_ms:.1f} ms"
    )
    setup.add_row("registrations retried after a 503", str(res.reg_retries))
    setup.add_row("TLS connect p50", f"{res.connect_p50_ms:.1f} ms")
    setup.add_row("server CPU during registration", f"{res.reg_server_cpu_s:.1f} s")
    setup.add_row("server RSS after registration", f"{res.rss_after_reg_mb:.0f} MB")
    setup.add_row(
        f"all {'streams' if res.mode == 'stream' else 'long polls'} held after",
        f"{res.polls_ready_s:.1f} s",
    )
    setup.add_row("server CPU until polls quiet", f"{res.polls_server_cpu_s:.1f} s")
    setup.add_row("server RSS, all polls held", f"{res.rss_polls_mb:.0f} MB")
    setup.add_row("server RSS end / peak", f"{res.rss_end_mb:.0f} / {res.rss_peak_mb:.0f} MB")
    if res.store == "etcd":
        setup.add_row("etcd RSS at the end (all members)", f"{res.etcd_rss_mb:.0f} MB")
    setup.add_row("client errors", str(res.client_errors))
    console.print(setup)

    changes = Table(title="changes (request sent -> every affected long poll answered)")
    for col in (
        "#",
        "kind",
        "node",
        "affected",
        "woke",
        "extra",
        "missing",
        "fan-out",
        "first",
        "p50",
        "PUT",
        "bytes",
        "server CPU",
    ):
        changes.add_column(col, justify="right")
    for i, c in enumerate(res.changes):
        changes.add_row(
            str(i),
            c.kind,
            str(c.target),
            str(c.expected),
            str(c.woke),
            str(c.unexpected),
            str(c.missing),
            f"{c.fanout_s * 1000:.0f} ms",
            f"{c.first_s * 1000:.1f} ms",
            f"{c.p50_s * 1000:.0f} ms",
            f"{c.request_s * 1000:.1f} ms",
            f"{c.bytes:,}",
            f"{c.server_cpu_s:.2f} s",
        )
    console.print(changes)
    if res.floor is not None:
        floor = Table(
            title=f"floor server (bench.floor_server, {res.floor.rss_mb:.0f} MB RSS with every "
            "stream held): the same answers, same clients"
        )
        for col in ("#", "kind", "woke", "extra", "floor fan-out", "floor p50", "real", "ratio"):
            floor.add_column(col, justify="right")
        for i, (f, c) in enumerate(zip(res.floor.changes, res.changes, strict=False)):
            floor.add_row(
                str(i),
                f.kind,
                f"{f.woke}/{f.expected}",
                str(f.unexpected),
                f"{f.fanout_s * 1000:.0f} ms",
                f"{f.p50_s * 1000:.0f} ms",
                f"{c.fanout_s * 1000:.0f} ms",
                f"{c.fanout_s / f.fanout_s:.2f}x",
            )
        console.print(floor)

    if res.per_server:
        per_server_table(res, console)

    targets = Table(title="DESIGN section 7 targets")
    targets.add_column("target")
    targets.add_column("measured", justify="right")
    targets.add_column("", justify="center")
    for name, measured, ok in res.checks():
        targets.add_row(name, measured, "[green]PASS[/]" if ok else "[red]MISS[/]")
    console.print(targets)
    if res.last_client_error:
        console.print(f"last client error: {res.last_client_error}")

    verdicts = " ".join(("PASS" if ok else "MISS") for _, _, ok in res.checks())
    cb = [c.bytes for c in res.changes if c.kind == "client"]
    sb = [c.bytes for c in res.changes if c.kind == "server"]
    etcd_rss = f"etcd_rss={res.etcd_rss_mb:.0f}MB " if res.store == "etcd" else ""
    if res.floor is not None:
        etcd_rss += (
            f"floor_ratio client={res.floor.ratio(res.changes, 'client'):.2f}x "
            f"server={res.floor.ratio(res.changes, 'server'):.2f}x "
        )
    return (
        f"fanout store={res.store} nodes={res.nodes} "
        f"{f'coord_servers={res.coord_servers} ' if res.coord_servers > 1 else ''}"
        f"mode={res.mode} reg={res.reg_rate:.0f}/s "
        f"p99={res.reg_p99_ms:.0f}ms "
        f"client_change={res.worst('client') * 1000:.0f}ms "
        f"({statistics.mean(cb) if cb else 0:,.0f} B) "
        f"server_change={res.worst('server') * 1000:.0f}ms "
        f"({statistics.mean(sb) if sb else 0:,.0f} B) "
        f"rss={max(res.rss_polls_mb, res.rss_end_mb):.0f}MB {etcd_rss}"
        f"[{'floor-ratio ' if res.floor else ''}client server rss exact: {verdicts}] in {res.elapsed_s:.0f}s"
    )
