"""Command line of the stand-in `k3s`: global flags, subcommand, config files, then dispatch.

`k3s [--debug] [--data-dir DIR] server|agent [flags]`, `k3s kubectl ...`,
`k3s etcd-snapshot save|ls [flags]`. Any other K3s subcommand is a known K3s command the stand-in
does not emulate (exit 3, so a test sees the driver called something unexpected); an unknown word
is refused like K3s refuses it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from pcloud.backend.k3s import flags
from tests.support.k3s_standin import node, tools
from tests.support.k3s_standin.settings import (
    EXIT_NOT_EMULATED,
    EXIT_USAGE,
    Usage,
    parse_command,
)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if "--debug" in args else logging.INFO,
        format="%(asctime)s k3s-standin %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        return _dispatch(args)
    except Usage as exc:
        print(f"Incorrect Usage: {exc}", file=sys.stderr)  # noqa: T201 - a CLI's own output
        return EXIT_USAGE


def _dispatch(args: list[str]) -> int:
    # Global flags come before the subcommand word.
    split = next((i for i, a in enumerate(args) if not a.startswith("-")), len(args))
    try:
        globals_ = flags.parse_args("global", args[:split])
    except flags.FlagError as exc:
        raise Usage(str(exc)) from None
    if globals_.flag("version"):
        print("k3s version v1.36.2+k3s1 (standin)\ngo version standin")  # noqa: T201
        return 0
    if split == len(args):
        raise Usage("no command given")
    command, rest = args[split], args[split + 1 :]
    data_dir = globals_.last("data-dir")
    if command in ("server", "agent"):
        settings = parse_command(command, rest, global_data_dir=data_dir)
        return node.run(settings)
    if command == "kubectl":
        return tools.kubectl(rest)
    if command == "etcd-snapshot":
        if not rest or rest[0].startswith("-"):
            # Removed in v1.27.1 (flags.json "removed"): a bare etcd-snapshot no longer saves.
            raise Usage("etcd-snapshot needs a subcommand (save, ls, delete, prune)")
        sub = rest[0]
        if sub not in ("save", "ls"):
            print(f"stand-in does not emulate etcd-snapshot {sub}", file=sys.stderr)  # noqa: T201
            return EXIT_NOT_EMULATED
        settings = parse_command(f"etcd-snapshot {sub}", rest[1:], global_data_dir=data_dir)
        return tools.etcd_snapshot(sub, settings)
    if command in flags.reference()["subcommands"]:
        print(f"stand-in does not emulate `k3s {command}`", file=sys.stderr)  # noqa: T201
        return EXIT_NOT_EMULATED
    raise Usage(f"unknown command {command!r}")
