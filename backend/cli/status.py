"""`pcloud status [--json]`: this device and its peers, as `tailscale status` shows them.

`--json` prints the local API's answer unchanged. The exit code is 1 unless PCloud is Running.
"""

from __future__ import annotations

import argparse
import json

from pcloud.backend.cli.common import EXIT_ERROR, EXIT_OK
from pcloud.backend.cli.filter_words import summary
from pcloud.backend.cli.render import print_table, state_line, status_table
from pcloud.backend.localapi.client import LocalClient
from pcloud.backend.localapi.schemas import Status


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="show this device and its peers")
    p.add_argument("--json", action="store_true", help="print the backend's status JSON")
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace, client: LocalClient) -> int:
    raw = await client.raw_status()
    if args.json:
        print(json.dumps(raw, indent=2))
        return EXIT_OK
    status = Status.model_validate(raw)
    line = state_line(status)
    if status.state in ("Running", "Starting") and status.self:
        print_table(status_table(status))
        print(f"# {summary(status.filter)}")
        if status.nat:
            print(f"# NAT: {status.nat}")
    if line:
        print(line)
    return EXIT_OK if status.state == "Running" else EXIT_ERROR
