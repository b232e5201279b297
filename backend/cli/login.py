"""`pcloud login JOIN-LINK [--auth-key K | --auth-key-file F | --username U]`."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from pcloud.backend.cli.common import EXIT_OK, CliError
from pcloud.backend.localapi.client import LocalClient


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("login", help="join a network with its join link")
    p.add_argument("server_url", metavar="JOIN-LINK", help="https://HOST:PORT/#fp=sha256:HEX")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--auth-key", help="pre-auth key (visible in `ps`; prefer --auth-key-file)")
    how.add_argument("--auth-key-file", type=Path, help="read the pre-auth key from this file")
    how.add_argument("--username", help="log in as this user; the password is prompted for")
    p.set_defaults(handler=run)


def read_password() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    # Scripts pipe the password in; a prompt would hang them.
    return sys.stdin.readline().rstrip("\n")


def auth_key_from(args: argparse.Namespace) -> str | None:
    """--auth-key, or what --auth-key-file holds (a file keeps the key out of `ps`)."""
    key: str | None = args.auth_key
    path: Path | None = args.auth_key_file
    if path is None:
        return key
    try:
        return path.read_text().strip()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from None


async def run(args: argparse.Namespace, client: LocalClient) -> int:
    auth_key = auth_key_from(args)
    if auth_key:
        status = await client.login(args.server_url, auth_key=auth_key)
    elif args.username:
        password = read_password()
        if not password:
            raise CliError("no password given")
        status = await client.login(args.server_url, username=args.username, password=password)
    else:
        raise CliError("give --auth-key, --auth-key-file or --username")
    address = status.self.address if status.self else "?"
    print(f"Logged in: this device is {address} ({status.state})")
    return EXIT_OK
