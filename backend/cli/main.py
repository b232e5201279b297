"""`pcloud`: the command-line client of the local API. One module per subcommand, each with
`register(subparsers)` and `async run(args, client) -> exit code`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from pcloud.backend.cli import (
    down,
    filter,
    ha,
    install_server,
    ip,
    join_server,
    login,
    logout,
    peers,
    ping,
    remove_server,
    rotate_key,
    status,
    up,
)
from pcloud.backend.cli.common import EXIT_USAGE, CliError, explain, fail
from pcloud.backend.localapi.client import DEFAULT_SOCKET, LocalAPIError, LocalClient
from pcloud.backend.version import package_version

SUBCOMMANDS = (
    login,
    up,
    down,
    logout,
    status,
    ip,
    peers,
    ping,
    rotate_key,
    install_server,
    join_server,
    ha,
    remove_server,
    filter,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pcloud", description="PCloud command-line client")
    parser.add_argument("--version", action="version", version=f"pcloud {package_version()}")
    parser.add_argument(
        "--socket",
        type=Path,
        default=Path(os.environ.get("PCLOUD_SOCKET", str(DEFAULT_SOCKET))),
        help=f"the backend's socket (default {DEFAULT_SOCKET}, or $PCLOUD_SOCKET)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


async def _run(args: argparse.Namespace) -> int:
    async with LocalClient(args.socket) as client:
        code: int = await args.handler(args, client)
        return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_run(args))
    except CliError as e:
        return fail(str(e))
    except LocalAPIError as e:
        return fail(explain(e))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `pcloud status | head -1`: the reader left, which is not an error worth a traceback.
        # Point stdout at /dev/null so the interpreter's flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
