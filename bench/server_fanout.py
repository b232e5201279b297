"""Coordination-server fan-out benchmark: many simulated nodes over HTTPS on loopback.

    python -m bench.server_fanout [--nodes 10000] [--users 1000] [--servers 3] [--changes 5]
                                  [--clients-procs N] [--store sqlite|etcd] [--etcd-members 1|3]
                                  [--coord-servers N] [--json PATH]

Starts a real `pcloud-server` (tests.support.coord.CoordServer) in a temp state dir, on its SQLite
file or (`--store etcd`) on an etcd of `--etcd-members` real members started for the run on
loopback (tests.support.etcd: 127.0.0.2-4, throwaway CA, stopped by PID at the end), creates an
admin, users and one reusable auth key per user, and registers `--nodes` simulated nodes (the
`--servers` first ones are server-role nodes registered by the admin, the rest are spread over the
users). Every node then holds a long poll on its own TLS connection, driven by `--clients-procs`
worker processes (bench.fanout_client). Once the server reports every poll waiting, it makes
changes and measures, per change, the time from sending the request until every long poll that
should wake has its answer, which polls woke (exactly the affected set must wake, no other), and
the bytes answered:

- client change: one client's endpoints (wakes its user's other devices and the servers);
- server change: one server-role node's endpoints (wakes every other node).

It also reads the server's RSS (/proc/PID/status) after registration and with every poll held,
and the server's CPU time per phase, then prints the figures against the DESIGN section 7
targets (PASS/MISS). With `--coord-servers N` (etcd only), N servers share the nodes
(bench.fanout_servers): the changes go through the first one, and the figures are also given
per server. Figures, not assertions: the exit status is 0 unless the run itself failed.
Everything stays on 127.0.0.1; the server and the workers are stopped by PID and the temp dir is
removed at the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from .fanout_report import report
from .fanout_results import Change, Config, Results
from .fanout_run import run

__all__ = ["Change", "Config", "Results", "main", "parse_args", "report", "run"]


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(
        prog="python -m bench.server_fanout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--nodes", type=int, default=10_000, help="simulated nodes, servers included")
    p.add_argument("--users", type=int, default=1_000, help="users the clients are spread over")
    p.add_argument("--servers", type=int, default=3, help="server-role nodes (admin-owned)")
    p.add_argument("--changes", type=int, default=5, help="changes measured of each kind")
    p.add_argument("--clients-procs", type=int, default=4, help="client worker processes")
    p.add_argument(
        "--reg-concurrency", type=int, default=64, help="registrations in flight over all workers"
    )
    p.add_argument(
        "--store",
        choices=("sqlite", "etcd"),
        default="sqlite",
        help="the server's store; etcd starts members on 127.0.0.2-4 for the run",
    )
    p.add_argument(
        "--etcd-members", type=int, default=1, choices=(1, 3), help="etcd members (--store etcd)"
    )
    p.add_argument(
        "--mode",
        choices=("stream", "poll"),
        default="stream",
        help="nodes hold netmap streams (default) or long polls",
    )
    p.add_argument(
        "--coord-servers",
        type=int,
        default=1,
        help="pcloud-server processes sharing the nodes on one etcd (--store etcd); node i "
        "streams from server i %% N, the changes go through server 0",
    )
    p.add_argument("--no-floor", action="store_true", help="skip the floor server's measurement")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results here")
    a = p.parse_args(argv)
    return Config(
        nodes=a.nodes,
        users=min(a.users, max(1, a.nodes - a.servers)),
        servers=a.servers,
        changes=a.changes,
        procs=max(1, a.clients_procs),
        reg_concurrency=a.reg_concurrency,
        json_path=a.json,
        store=a.store,
        etcd_members=a.etcd_members,
        mode=a.mode,
        floor=not a.no_floor,
        coord_servers=max(1, a.coord_servers),
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        res = run(cfg)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the run failed: say why, exit non-zero
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    summary = report(res)
    if cfg.json_path is not None:
        cfg.json_path.write_text(json.dumps(asdict(res), indent=2))
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
