"""`pcloud peers`: hostname, overlay IP, online, last handshake and endpoint of every peer."""

from __future__ import annotations

import argparse

from pcloud.backend.cli.common import EXIT_OK, require_running
from pcloud.backend.cli.render import peers_table, print_table
from pcloud.backend.localapi.client import LocalClient


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("peers", help="list the peers this device can reach")
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace, client: LocalClient) -> int:
    status = await client.status()
    require_running(status)
    if not status.peers:
        print("# no peers")
    else:
        print_table(peers_table(status))
    return EXIT_OK
