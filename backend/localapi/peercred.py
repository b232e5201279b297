"""Who is calling: SO_PEERCRED of a Unix-socket connection, and the one rule for writing.

Anyone who can connect may read (everybody can reach the read-only `.ro` socket). Writing (login, up, down, logout, ...) is for uid 0, the
backend's own uid, and members of the `pcloud` group, as Tailscale's `IsReadonlyConn`. The
kernel fills SO_PEERCRED at connect() time, so the caller cannot forge it; supplementary groups
are not in it, so we read them from /proc/PID/status of the peer right after accept.
"""

from __future__ import annotations

import grp
import os
import socket
import struct
from dataclasses import dataclass

_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }


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
        return cls(pid, uid, gid, groups_of_pid(pid))


# Nobody: what a connection without credentials (not AF_UNIX, e.g. a test transport) is.
ANONYMOUS = Caller(pid=0, uid=-1, gid=-1, groups=frozenset())


def groups_of_pid(pid: int) -> frozenset[int]:
    """Supplementary groups of process `pid` (empty if it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return frozenset(int(g) for g in line.split()[1:])
    except (OSError, ValueError):
        pass
    return frozenset()


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
