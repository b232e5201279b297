"""The `pcloud-server` command: `pcloud-server admin ...` without loading the server itself.

Serving imports the whole stack (FastAPI, uvicorn, the stores); the admin CLI talking to a
running server needs none of it, and on a busy Pi that is seconds per command.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "admin":
        from .admin import main as admin_main

        return admin_main(argv[1:])
    from .__main__ import main as serve_main

    return serve_main(argv)


if __name__ == "__main__":
    sys.exit(main())
