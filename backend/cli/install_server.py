"""`pcloud install-server [--network CIDR] [--listen LAN_ADDR:PORT] [--public-url URL]
[--k3s-binary PATH] [--admin-user NAME]`: make this machine the network's first server.

The first admin's password is prompted for (twice) on a terminal, or read from stdin in
scripts. Running the command again after a failure resumes the job where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path

from rich.console import Console

from pcloud.backend.cli.common import EXIT_OK, CliError
from pcloud.backend.cli.follow import failure, follow
from pcloud.backend.localapi.client import LocalAPIError, LocalClient


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("install-server", help="make this machine the network's first server")
    p.add_argument("--network", help="overlay network CIDR (default 10.0.0.0/24)")
    p.add_argument(
        "--listen",
        metavar="LAN_ADDR:PORT",
        help="where the coordination server listens (default first LAN IP, :8443)",
    )
    p.add_argument(
        "--public-url",
        metavar="https://PUBLIC_IP:PORT",
        help="the address devices outside the LAN use: forward this TCP port, the "
        "same port on UDP (the relay) and the WireGuard UDP port (--listen-port) on the "
        "router to this machine",
    )
    p.add_argument(
        "--k3s-binary",
        type=Path,
        help="K3s binary to install (default: the pinned release, SHA-256 checked; "
        "no hash is pinned yet, so give one for now)",
    )
    p.add_argument(
        "--admin-user",
        metavar="NAME",
        help="the first admin's name (password prompted, or read from stdin)",
    )
    p.set_defaults(handler=run)


def read_new_password(user: str) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"Password for {user}: ")
    if first != getpass.getpass("Repeat it: "):
        raise CliError("the two passwords differ")
    return first


async def admin_exists(client: LocalClient) -> bool:
    """True when this device already talks to its own server and that server has an admin."""
    try:
        answer = await client.coord("GET", "/health")
    except LocalAPIError:
        return False  # not installed (or not logged in) yet
    return answer.status == 200 and not answer.body.get("needs_setup", True)


async def run(args: argparse.Namespace, client: LocalClient) -> int:
    user, password = args.admin_user, None
    if not await admin_exists(client):
        if user is None and sys.stdin.isatty():
            user = (await asyncio.to_thread(input, "First admin's username: ")).strip() or None
        if user:
            password = read_new_password(user)
            if len(password) < 8:
                raise CliError("the admin's password needs at least 8 characters")
    binary = str(args.k3s_binary.resolve()) if args.k3s_binary else None
    job_id = await client.install_server(
        network=args.network,
        listen=args.listen,
        k3s_binary=binary,
        admin_username=user if password else None,
        admin_password=password,
        public_url=args.public_url,
    )
    console = Console(width=None if sys.stdout.isatty() else 120)
    job = await follow(client, job_id, console)
    if job.state != "done":
        raise failure("install-server", job)
    result = job.result or {}
    console.print(
        f"Server installed: this device is {result.get('address')}", highlight=False, soft_wrap=True
    )
    if result.get("setup_code"):
        console.print(
            f"Setup code (create the first admin with it): {result['setup_code']}",
            highlight=False,
            soft_wrap=True,
        )
    if result.get("admin"):
        console.print(f"First admin: {result['admin']}", highlight=False, soft_wrap=True)
    console.print(
        f"Join link for the next devices: {result.get('join_link')}",
        highlight=False,
        soft_wrap=True,
    )
    if result.get("install_line"):
        console.print(
            "One-line install for a new device (its own pcloud package from this server, "
            f"with a pre-auth key):\n  {result['install_line']}",
            highlight=False,
            soft_wrap=True,
        )
    return EXIT_OK
