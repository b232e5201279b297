"""Who may write: the rule table, SO_PEERCRED on a real socket pair, /proc groups."""

from __future__ import annotations

import os
import socket

from pcloud.backend.localapi.peercred import ANONYMOUS, Caller, groups_of_pid, may_write

GID = 995


def caller(uid: int, gid: int = 100, groups: tuple[int, ...] = ()) -> Caller:
    return Caller(pid=1234, uid=uid, gid=gid, groups=frozenset(groups))


def test_root_and_own_uid_may_write() -> None:
    assert may_write(caller(0), backend_uid=0, admin_gid=GID) == (True, "root")
    ok, reason = may_write(caller(1500), backend_uid=1500, admin_gid=None)
    assert ok and "own user" in reason


def test_group_members_may_write_by_primary_or_supplementary_group() -> None:
    assert may_write(caller(1000, groups=(27, GID)), backend_uid=0, admin_gid=GID)[0]
    assert may_write(caller(1000, gid=GID), backend_uid=0, admin_gid=GID)[0]


def test_others_are_read_only_with_a_reason() -> None:
    ok, reason = may_write(caller(65534, 65534), backend_uid=0, admin_gid=GID)
    assert not ok and "usermod -aG pcloud" in reason and "65534" in reason
    ok, reason = may_write(caller(1000, groups=(GID,)), backend_uid=0, admin_gid=None)
    assert not ok and "does not exist" in reason
    assert not may_write(ANONYMOUS, backend_uid=0, admin_gid=GID)[0]


def test_caller_from_socketpair_is_this_process() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        who = Caller.from_socket(a)
    assert (who.pid, who.uid, who.gid) == (os.getpid(), os.geteuid(), os.getegid())
    assert who.groups == frozenset(os.getgroups())


def test_groups_of_missing_process_is_empty() -> None:
    assert groups_of_pid(2**22 + 12345) == frozenset()
