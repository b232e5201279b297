"""`pcloud up`: connect: bring the WireGuard interface up."""

from __future__ import annotations

import argparse

from pcloud.backend.cli.common import EXIT_OK
from pcloud.backend.localapi.client import LocalClient


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("up", help="connect: bring the WireGuard interface up")
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace, client: LocalClient) -> int:
    status = await client.up()
    note = status.unreachable_note()
    detail = note or status.error
    print(f"PCloud is {status.state}" + (f": {detail}" if detail else ""))
    return EXIT_OK
