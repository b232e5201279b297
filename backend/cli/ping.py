"""`pcloud ping PEER [-c N]`: the system ping to a peer's overlay address, through the tunnel,
then which endpoint WireGuard used for it."""

from __future__ import annotations

import argparse
import asyncio
import shutil

from pcloud.backend.cli.common import CliError, require_running
from pcloud.backend.localapi.client import LocalClient
from pcloud.backend.localapi.schemas import PeerStatus, Status


def echo_count(text: str) -> int:
    """-c N: ping's own error for 0 ("invalid argument") would read as a tunnel problem."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of echoes") from None
    if not 1 <= n <= 100:
        raise argparse.ArgumentTypeError(f"{n} echoes: give 1 to 100")
    return n


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ping", help="ping a peer through the tunnel")
    p.add_argument("peer", help="hostname or overlay IP")
    p.add_argument("-c", "--count", type=echo_count, default=4, help="echoes to send (1-100)")
    p.set_defaults(handler=run)


def find_peer(status: Status, name: str) -> PeerStatus:
    for peer in status.peers:
        if name in (peer.hostname, peer.address):
            return peer
    known = ", ".join(sorted(p.hostname for p in status.peers)) or "none"
    raise CliError(f"no peer named {name!r} (peers: {known})")


async def run(args: argparse.Namespace, client: LocalClient) -> int:
    status = await client.status()
    require_running(status)
    peer = find_peer(status, args.peer)
    ping = shutil.which("ping")
    if ping is None:
        raise CliError("the system `ping` is not installed")
    proc = await asyncio.create_subprocess_exec(
        ping, "-c", str(args.count), "-W", "2", peer.address
    )
    code = await proc.wait()
    after = find_peer(await client.status(), peer.hostname)
    if code == 0:
        via = after.endpoint or "an unknown endpoint"
        print(f"{peer.hostname} ({peer.address}) answered via {via}")
    else:
        print(
            f"{peer.hostname} ({peer.address}) did not answer; WireGuard endpoint "
            f"{after.endpoint or 'none'}, candidates {', '.join(peer.endpoints) or 'none'}"
        )
    return code
