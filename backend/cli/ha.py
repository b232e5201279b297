"""`pcloud ha enable | join [--listen ADDR:PORT] | force-new-cluster --yes-i-lost-the-other-servers`:
the coordination state on a replicated etcd store run by the servers themselves.

`enable` runs on the first server (it holds the SQLite store) once the network has 3 servers;
`join` then runs on each other server. `force-new-cluster` is the recovery after losing all
other servers for good; it needs its confirmation flag. Each shows its job's steps as they go,
and running it again resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console

from pcloud.backend.cli.common import EXIT_OK, CliError
from pcloud.backend.cli.follow import failure, follow
from pcloud.backend.localapi.client import LocalClient

CONFIRM_FLAG = "yes-i-lost-the-other-servers"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ha", help="high availability of the coordination server")
    ha = p.add_subparsers(dest="ha_command", metavar="ACTION", required=True)
    enable = ha.add_parser("enable", help="move the state to etcd (on the first server)")
    enable.set_defaults(handler=run_enable)
    join = ha.add_parser("join", help="run this server's etcd member and coordination server")
    join.add_argument(
        "--listen",
        metavar="LAN_ADDR:PORT",
        help="where this coordination server listens (default LAN address:8443)",
    )
    join.set_defaults(handler=run_join)
    force = ha.add_parser(
        "force-new-cluster",
        help="recover on the last server after losing the others for good (destructive)",
    )
    force.add_argument(
        f"--{CONFIRM_FLAG}",
        dest="confirmed",
        action="store_true",
        help="confirm that the other servers are gone for good",
    )
    force.set_defaults(handler=run_force)


def _console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 120)


async def _follow(client: LocalClient, job_id: str, kind: str) -> dict[str, Any]:
    job = await follow(client, job_id, _console())
    if job.state != "done":
        raise failure(kind, job)
    return job.result or {}


async def run_enable(args: argparse.Namespace, client: LocalClient) -> int:
    result = await _follow(client, await client.ha_enable(), "ha enable")
    others = result.get("join_on") or []
    _console().print(
        f"The state is on etcd ({result.get('records', '?')} records, sha256 "
        f"{str(result.get('digest', ''))[:16]} checked). Next, on "
        f"{', '.join(map(str, others)) or 'each other server'}: pcloud ha join",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    return EXIT_OK


async def run_join(args: argparse.Namespace, client: LocalClient) -> int:
    result = await _follow(client, await client.ha_join(listen=args.listen), "ha join")
    _console().print(f"This server serves the network at {result.get('server_url')}",
                     highlight=False, soft_wrap=True)  # fmt: skip
    return EXIT_OK


async def run_force(args: argparse.Namespace, client: LocalClient) -> int:
    if not args.confirmed:
        raise CliError(
            "force-new-cluster makes this server's etcd member the whole cluster; the lost "
            "servers can never rejoin with their data. If they are gone for good, run: "
            f"pcloud ha force-new-cluster --{CONFIRM_FLAG}"
        )
    await _follow(client, await client.ha_force_new_cluster(CONFIRM_FLAG),
                  "ha force-new-cluster")  # fmt: skip
    _console().print(
        "Recovered: this server alone serves the network. Add servers with "
        "`pcloud join-server` and `pcloud ha join`.",
        highlight=False,
    )
    return EXIT_OK
