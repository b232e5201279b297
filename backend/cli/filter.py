"""`pcloud filter [--json]`: the packet filter in force on this device, in policy words."""

from __future__ import annotations

import argparse
import json

from pcloud.backend.cli.common import EXIT_ERROR, EXIT_OK
from pcloud.backend.cli.filter_words import filter_table, summary
from pcloud.backend.cli.render import print_table
from pcloud.backend.localapi.client import LocalClient


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("filter", help="show who may reach this device, on which ports")
    p.add_argument("--json", action="store_true", help="print the backend's filter JSON")
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace, client: LocalClient) -> int:
    detail = await client.packet_filter()
    if args.json:
        print(json.dumps(detail.model_dump(mode="json"), indent=2))
        return EXIT_OK
    status = await client.status()
    me = f" ({status.self.hostname}, {status.self.address})" if status.self else ""
    print(f"# {summary(detail)}{me}")
    if detail.detail:
        print_table(filter_table(detail.detail, status))
    if detail.state == "in_force":
        print(
            "# everything else arriving from peers is dropped; replies to what this device"
            " opened always pass"
        )
    return EXIT_ERROR if detail.state == "failed" else EXIT_OK
