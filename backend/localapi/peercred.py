"""Who is calling: SO_PEERCRED of a Unix-socket connection, and the one rule for writing.

Anyone who can connect may read (everybody can reach the read-only `.ro` socket). Writing (login, up, down, logout, ...) is for uid 0, the
backend's own uid, and members of the `pcloud` group, as Tailscale's `IsReadonlyConn`. The
kernel fills SO_PEERCRED at connect() time, so the caller cannot forge it. Supplementary groups
come from SO_PEERGROUPS (Linux 4.13+), also captured at connect(): reading /proc/PID/status
after accept could read whatever process has that PID by then.
"""

from __future__ import annotations

import ctypes
import errno
import grp
import os
import socket
import struct
from dataclasses import dataclass

_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }
# Not in Python's socket module; the value is the same on every Linux architecture.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_GID = struct.Struct("I")
NGROUPS_MAX = 65536  # the kernel's limit on supplementary groups


@dataclass(frozen=True)
class Caller:
    pid: int
    uid: int
    gid: int
    groups: frozenset[int]

    @classmethod
    def from_socket(cls, sock: socket.socket) -> Caller:
        pid, uid, gid = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        return cls(pid, uid, gid, peer_groups(sock))


# Nobody: what a connection without credentials (not AF_UNIX, e.g. a test transport) is.
ANONYMOUS = Caller(pid=0, uid=-1, gid=-1, groups=frozenset())


def peer_groups(sock: socket.socket) -> frozenset[int]:
    """Supplementary groups of the process that connected `sock`, as they were at connect().

    Python's getsockopt takes at most 1024 bytes (256 groups), enough for nearly everyone; the
    kernel answers ERANGE for a caller with more, who is asked again through libc.
    """
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
    except OSError as e:
        if e.errno != errno.ERANGE:
            raise
        raw = _peer_groups_libc(sock.fileno())
    return frozenset(g for (g,) in _GID.iter_unpack(raw[: len(raw) - len(raw) % _GID.size]))


def _peer_groups_libc(fd: int) -> bytes:
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(NGROUPS_MAX * _GID.size)
    size = ctypes.c_uint32(len(buf))
    if libc.getsockopt(fd, socket.SOL_SOCKET, SO_PEERGROUPS, buf, ctypes.byref(size)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return buf.raw[: size.value]


def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def may_write(caller: Caller, *, backend_uid: int, admin_gid: int | None) -> tuple[bool, str]:
    """(allowed, reason): the reason names why, for the log or the 403 message."""
    if caller.uid == 0:
        return True, "root"
    if caller.uid == backend_uid and caller.uid >= 0:
        return True, "the backend's own user"
    if admin_gid is not None and (caller.gid == admin_gid or admin_gid in caller.groups):
        return True, "member of the pcloud group"
    if admin_gid is None:
        return False, (
            f"uid {caller.uid} is not root and the pcloud group does not exist (create it and "
            "add the user: sudo groupadd --system pcloud && sudo usermod -aG pcloud $USER, "
            "then log in again)"
        )
    return False, (
        f"uid {caller.uid} is neither root nor in the pcloud group "
        "(add the user with: sudo usermod -aG pcloud $USER, then log in again)"
    )


def default_write_rule(group_name: str = "pcloud") -> tuple[int, int | None]:
    """(backend uid, admin gid) as the checks above need them."""
    return os.geteuid(), group_id(group_name)
