"""`pcloud ip`: this device's overlay address."""

from __future__ import annotations

import argparse

from pcloud.backend.cli.common import EXIT_OK, CliError
from pcloud.backend.localapi.client import LocalClient


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("ip", help="print this device's overlay IP")
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace, client: LocalClient) -> int:
    status = await client.status()
    if status.self is None:
        raise CliError("not logged in: run `pcloud login JOIN-LINK`")
    print(status.self.address)
    return EXIT_OK
