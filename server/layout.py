"""Where a coordination server keeps its files on a machine: one layout, named once.

`pcloud install-server` (the backend's job, which keeps the server's state under its own state
dir as `server/`), the packaged `pcloud-server.service`, `pcloud-server` started by hand and
`pcloud-server admin` all use this one place, so the admin CLI finds a server however it was
installed, without flags. The server runs as root: it shares the backend's 0700 state dir and
its admin socket is root-only (every caller on it is an admin).
"""

from __future__ import annotations

from pathlib import Path

# The backend's default state dir (/var/lib/pcloud) plus "server": the backend's install-server
# job derives the same path from its own state dir (it may not import this module).
STATE_DIR = Path("/var/lib/pcloud/server")
# The files in a server's state dir (tls/ is security.tls.TlsFiles').
ADMIN_SOCKET = "admin.sock"  # root-only: every caller is an admin
DB_NAME = "pcloud.db"  # the SQLite store
SERVER_JSON = "server.json"  # the settings of the first start (arguments.load_settings)
SETUP_CODE = "setup-code"  # 0600, until the first admin exists


def admin_socket(state_dir: Path) -> Path:
    return state_dir / ADMIN_SOCKET


def setup_code_file(state_dir: Path) -> Path:
    return state_dir / SETUP_CODE


def holds_server(state_dir: Path) -> bool:
    """True if `state_dir` holds a coordination server's state (a server ran there once)."""
    return (state_dir / DB_NAME).exists() or (state_dir / SERVER_JSON).exists()
