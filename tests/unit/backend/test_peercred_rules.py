"""Who may write: the rule table, SO_PEERCRED and SO_PEERGROUPS on real sockets."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

from pcloud.backend.localapi.peercred import ANONYMOUS, Caller, may_write

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


@pytest.mark.skipif(os.geteuid() != 0, reason="setgroups needs root")
@pytest.mark.parametrize("count", [3, 300])  # 300: more than Python's getsockopt buffer holds
def test_groups_are_the_callers_at_connect_even_after_it_exited(count: int) -> None:
    """Finding 13: groups captured at connect() (SO_PEERGROUPS), not read from /proc/PID after
    accept: the caller has exited (its PID free for reuse) before the backend accepts."""
    groups = list(range(4000, 4000 + count))
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "s.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        pid = os.fork()
        if pid == 0:  # the caller: other groups, connect, exit
            try:
                os.setgroups(groups)
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.connect(path)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert not Path(f"/proc/{pid}").exists()
        conn, _ = server.accept()
        with conn, server:
            who = Caller.from_socket(conn)
    assert who.pid == pid and who.groups == frozenset(groups)
