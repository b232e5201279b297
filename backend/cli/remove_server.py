"""`pcloud remove-server [--demote]`: this server leaves the control plane (K3s and our etcd),
refused with the reason unless the remaining servers keep quorum without it; `--demote` turns it
into a client that keeps its address. Running it again resumes the job where it stopped.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from pcloud.backend.cli.common import EXIT_OK
from pcloud.backend.cli.follow import failure, follow
from pcloud.backend.localapi.client import LocalClient


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("remove-server", help="remove this machine as a server")
    p.add_argument(
        "--demote",
        action="store_true",
        help="afterwards, make this device a client (it keeps its address)",
    )
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace, client: LocalClient) -> int:
    console = Console(width=None if sys.stdout.isatty() else 120)
    job = await follow(client, await client.remove_server(demote=args.demote), console)
    if job.state != "done":
        raise failure("remove-server", job)
    role = (job.result or {}).get("role", "server")
    console.print(f"This machine is no longer a server of the control plane (role {role}).",
                  highlight=False)  # fmt: skip
    return EXIT_OK
