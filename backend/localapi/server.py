"""The local API's sockets: created by us, served by one uvicorn server, one Caller per
connection.

Two sockets, one app (DESIGN section 3):
- `<socket>` (default /run/pcloud/backend.sock), 0660 root:pcloud: root and the group's members;
- `<socket>.ro` (default /run/pcloud/backend.sock.ro), 0666: everybody, so any local user can
  read the status (`pcloud status`, the tray icon) without being in the group.
The permission check is the same on both: SO_PEERCRED of the connection, then `may_write` for
every request that changes something (routes.py). A member of the group who connects through
`.ro` may still write; the main socket's mode is defence in depth, not the rule itself.

`uvicorn --uds` would create the socket 0666 and never tell the app who connected, so we bind the
AF_UNIX socket ourselves and hand it to `uvicorn.Server.serve(sockets=[...])`. `PeerCredProtocol`
(uvicorn's h11 protocol) reads SO_PEERCRED in `connection_made` and puts the `Caller` into the
per-connection copy of the ASGI `state`, which every request of that connection receives as
`scope["state"]["caller"]` (Starlette: `request.state.caller`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from pcloud.backend.localapi.client import readonly_socket_path
from pcloud.backend.localapi.peercred import ANONYMOUS, Caller, group_id

log = logging.getLogger(__name__)


class SocketInUse(Exception):
    """Another backend answers on the socket path."""


class PeerCredProtocol(H11Protocol):
    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        caller = ANONYMOUS
        if sock is not None and sock.family == socket.AF_UNIX:
            try:
                caller = Caller.from_socket(sock)
            except OSError as e:
                log.warning("cannot read the caller's credentials: %s", e)
        # app_state is copied into each request's scope; a per-connection dict keeps callers
        # of different connections apart.
        local = ""
        if sock is not None:
            with contextlib.suppress(OSError):
                local = str(sock.getsockname())  # which of the two sockets, for the log
        self.app_state = {**self.app_state, "caller": caller, "local_socket": local}
        super().connection_made(transport)


def ensure_group(name: str) -> int | None:
    """The gid of `name`, creating it as a system group when we are root and it is missing."""
    gid = group_id(name)
    if gid is None and os.geteuid() == 0 and shutil.which("groupadd"):
        result = subprocess.run(
            ["groupadd", "--system", name], capture_output=True, text=True, check=False
        )
        if result.returncode not in (0, 9):  # 9: it appeared meanwhile
            log.warning("groupadd --system %s failed: %s", name, result.stderr.strip())
        gid = group_id(name)
    return gid


def bind_socket(path: Path, *, mode: int = 0o660, group: str = "pcloud") -> socket.socket:
    """A listening AF_UNIX socket at `path`, mode `mode`, owned by root:`group` when possible."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError as e:
            if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise
            path.unlink(missing_ok=True)  # a leftover of a backend that died
        else:
            raise SocketInUse(f"another backend is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bind under a tight umask so the socket is never briefly connectable by everyone.
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    gid = ensure_group(group)
    if gid is not None and os.geteuid() == 0:
        os.chown(path, 0, gid)
    elif gid is None:
        log.warning("group %s is missing: only root can change the backend", group)
    os.chmod(path, mode)
    sock.listen(128)
    sock.setblocking(False)
    return sock


MAIN_MODE = 0o660
READONLY_MODE = 0o666


def bind_sockets(path: Path, *, group: str = "pcloud", readonly: bool = True) -> list[socket.socket]:
    """The main socket at `path` (0660 root:`group`) and, unless `readonly` is False, the
    read-only one at `path`.ro (0666). Both or neither: a failure on the second closes and
    removes the first."""
    main = bind_socket(path, mode=MAIN_MODE, group=group)
    if not readonly:
        # A leftover from a run that had it would mislead clients into a dead socket.
        remove_socket(readonly_socket_path(path))
        return [main]
    try:
        ro = bind_socket(readonly_socket_path(path), mode=READONLY_MODE, group=group)
    except BaseException:
        main.close()
        remove_socket(path)
        raise
    return [main, ro]


def remove_sockets(path: Path) -> None:
    remove_socket(path)
    remove_socket(readonly_socket_path(path))


def make_server(app: Any, *, log_level: str = "warning") -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        http=PeerCredProtocol,
        ws="none",
        lifespan="off",
        log_config=None,  # keep the backend's logging setup
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=2,  # SSE streams never end on their own
    )
    return uvicorn.Server(config)


def remove_socket(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
