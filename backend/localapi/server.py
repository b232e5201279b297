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

Any local user can connect to `.ro`, so the protocol also bounds what one user can hold
(security review, finding 9): connections per uid (root and the backend's own uid exempt),
one deadline to finish the request head, and heads over h11's 16 KiB answered 431 (the header
count is checked in routes.py). A refusal logs one rate-limited warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from pcloud.backend.localapi.client import readonly_socket_path
from pcloud.backend.localapi.peercred import ANONYMOUS, Caller, group_id

log = logging.getLogger(__name__)


class SocketInUse(Exception):
    """Another backend answers on the socket path."""


MAX_HEAD_BYTES = 16 * 1024  # h11's receive-buffer cap for an incomplete head


@dataclass(frozen=True)
class LocalApiLimits:
    head_timeout_s: float = 10.0
    max_connections_per_uid: int = 32  # root and the backend's own uid are exempt


def _answer(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body)
    )


class _Warn:
    """One warning per kind every `interval` s, counting the ones held back."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, tuple[float, int]] = {}

    def __call__(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last, held = self._last.get(kind, (-self.interval, 0))
        if now - last < self.interval:
            self._last[kind] = (last, held + 1)
            return
        if held:
            message += " (%d more like this in the last %.0f s)"
            args = (*args, held, now - last)
        self._last[kind] = (now, 0)
        log.warning(message, *args)


class PeerCredProtocol(H11Protocol):
    limits: ClassVar[LocalApiLimits] = LocalApiLimits()
    per_uid: ClassVar[dict[int, int]] = {}
    warn: ClassVar[_Warn] = _Warn()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counted_uid: int | None = None
        self._head_timer: asyncio.TimerHandle | None = None

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
        if not self._admit(caller):
            cap = self.limits.max_connections_per_uid
            self.warn(
                "uid-cap",
                "refused a connection from uid %d on %s: it already holds %d",
                caller.uid,
                local,
                cap,
            )
            transport.write(
                _answer(
                    503,
                    "Service Unavailable",
                    "too_many_connections",
                    f"uid {caller.uid} already holds {cap} connections to the "
                    "local API; close some",
                )
            )
            transport.close()
            return
        self._arm_head_timer()

    def _admit(self, caller: Caller) -> bool:
        if caller.uid in (0, os.geteuid()):
            return True  # root, and the backend itself, are not limited
        held = self.per_uid.get(caller.uid, 0)
        if held >= self.limits.max_connections_per_uid:
            return False
        self.per_uid[caller.uid] = held + 1
        self._counted_uid = caller.uid
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        uid, self._counted_uid = self._counted_uid, None
        if uid is not None:
            held = self.per_uid.get(uid, 0) - 1
            if held > 0:
                self.per_uid[uid] = held
            else:
                self.per_uid.pop(uid, None)
        super().connection_lost(exc)

    # A connection must finish each request head within `head_timeout_s` of its first byte
    # (of connecting, for the first): uvicorn's keep-alive timer only runs after a response.

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_late)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            caller = self.app_state.get("caller", ANONYMOUS)
            self.warn(
                "head-timeout",
                "closed a local API connection of uid %d that sent no complete request within %g s",
                caller.uid,
                self.limits.head_timeout_s,
            )
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            self._arm_head_timer()  # a head has started and is not complete yet
        else:
            self._cancel_head_timer()

    def send_400_response(self, msg: str) -> None:
        # h11 refuses an incomplete head past its buffer cap; say so (431), not "invalid".
        if len(self.conn.trailing_data[0]) > MAX_HEAD_BYTES:
            caller = self.app_state.get("caller", ANONYMOUS)
            self.warn(
                "head-too-large",
                "answered 431 to uid %d: request head over %d bytes",
                caller.uid,
                MAX_HEAD_BYTES,
            )
            self.transport.write(
                _answer(
                    431,
                    "Request Header Fields Too Large",
                    "header_too_large",
                    f"the request head is larger than {MAX_HEAD_BYTES} bytes",
                )
            )
            self.transport.close()
            return
        super().send_400_response(msg)


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


def bind_sockets(
    path: Path, *, group: str = "pcloud", readonly: bool = True
) -> list[socket.socket]:
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


def make_server(
    app: Any, *, log_level: str = "warning", limits: LocalApiLimits | None = None
) -> uvicorn.Server:
    # A class per server: its limits and its count of connections per uid.
    protocol = type(
        "LocalApiProtocol",
        (PeerCredProtocol,),
        {"limits": limits or LocalApiLimits(), "per_uid": {}, "warn": _Warn()},
    )
    config = uvicorn.Config(
        app,
        http=protocol,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
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
