"""`pcloud join-server [--auth-key K | --auth-key-file F | --admin-user NAME]
[--k3s-binary PATH]`: this device (already a client) becomes a server of the network and of its
K3s cluster. Approval is a server-role pre-auth key, or an admin signing in here (password
prompted, or read from stdin). Running it again resumes the job where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from pcloud.backend.cli.common import EXIT_OK, CliError
from pcloud.backend.cli.follow import failure, follow
from pcloud.backend.cli.login import auth_key_from, read_password
from pcloud.backend.localapi.client import LocalClient


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("join-server", help="add this machine as a server")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--auth-key", help="server-role pre-auth key (prefer --auth-key-file)")
    how.add_argument("--auth-key-file", type=Path, help="read the pre-auth key from this file")
    how.add_argument(
        "--admin-user",
        metavar="NAME",
        help="approve as this admin (password prompted, or read from stdin)",
    )
    p.add_argument(
        "--k3s-binary",
        type=Path,
        help="K3s binary to install (default: the pinned release, SHA-256 checked; "
        "no hash is pinned yet, so give one for now)",
    )
    p.set_defaults(handler=run)


async def admin_token(client: LocalClient, user: str) -> str:
    password = read_password()
    answer = await client.coord("POST", "/login", body={"username": user, "password": password})
    if answer.status != 200:
        error = answer.body.get("error", {}) if isinstance(answer.body, dict) else {}
        raise CliError(f"admin sign-in failed: {error.get('message', answer.status)}")
    return str(answer.body["token"])


async def run(args: argparse.Namespace, client: LocalClient) -> int:
    status = await client.status()
    if status.self is None:
        raise CliError("join the network as a client first: `pcloud login JOIN-LINK`")
    auth_key = auth_key_from(args)
    token = await admin_token(client, args.admin_user) if args.admin_user else None
    binary = str(args.k3s_binary.resolve()) if args.k3s_binary else None
    job_id = await client.join_server(auth_key=auth_key, token=token, k3s_binary=binary)
    console = Console(width=None if sys.stdout.isatty() else 120)
    job = await follow(client, job_id, console)
    if job.state != "done":
        raise failure("join-server", job)
    result = job.result or {}
    console.print(
        f"This device ({result.get('address')}) is now a server; K3s API {result.get('k3s_url')}",
        highlight=False,
        soft_wrap=True,
    )
    return EXIT_OK
