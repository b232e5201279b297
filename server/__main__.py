"""`pcloud-server`: parse arguments, then serve HTTPS and the admin socket (serve.py).

`pcloud-server --state-dir DIR --listen HOST:PORT [--listen ...] [--network CIDR]
[--store sqlite|etcd --etcd-endpoint URL ... --etcd-ca F --etcd-cert F --etcd-key F]` serves the
coordination API (options: arguments.py); `pcloud-server admin ...` (see admin.py) manages it
from the server's shell.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from .app import StoreMismatch
from .arguments import load_settings, server_parser
from .serve import serve
from .store.base import StoreError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "admin":
        from .admin import main as admin_main

        return admin_main(argv[1:])
    if argv and argv[0] == "migrate-to-etcd":  # run by the backend's ha-enable job
        from .store.migrate_cmd import main as migrate_main

        return migrate_main(argv[1:])
    args = server_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings(args)
    except ValueError as exc:
        print(f"pcloud-server: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings))
    except (StoreMismatch, StoreError) as exc:
        print(f"pcloud-server: cannot open the store: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pcloud-server: cannot serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
