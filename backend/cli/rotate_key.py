"""`pcloud rotate-key`: a new WireGuard key pair for this device; node and address stay."""

from __future__ import annotations

import argparse

from pcloud.backend.cli.common import EXIT_ERROR, EXIT_OK, CliError
from pcloud.backend.localapi.client import LocalClient


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "rotate-key", help="replace this device's WireGuard key (its overlay IP stays)"
    )
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace, client: LocalClient) -> int:
    before = await client.status()
    if before.self is None:
        raise CliError("not logged in: run `pcloud login JOIN-LINK`")
    after = await client.rotate_key()
    if after.self is None:  # logged out meanwhile by someone else
        raise CliError("the device was logged out during the rotation")
    print(f"New public key: {after.self.public_key}")
    if after.self.address != before.self.address:
        # The server keeps the address on rotation; saying so plainly if it ever did not.
        print(f"Address changed: {before.self.address} -> {after.self.address}")
        return EXIT_ERROR
    print(f"Address unchanged: {after.self.address}")
    return EXIT_OK
