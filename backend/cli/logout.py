"""`pcloud logout`: leave the network and forget this device's credentials."""

from __future__ import annotations

import argparse

from pcloud.backend.cli.common import EXIT_OK
from pcloud.backend.localapi.client import LocalClient


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("logout", help="leave the network and forget this device's credentials")
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace, client: LocalClient) -> int:
    status = await client.logout()
    print(f"PCloud is {status.state}" + (f": {status.error}" if status.error else ""))
    return EXIT_OK
