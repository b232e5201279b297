"""The managed resolv.conf on real files in a temporary /etc: backup before the change, exact
restore (bytes, mode, symlink, absence), crash recovery, and hands off a file someone rewrote."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pcloud.backend.dns.manager import DnsManager
from pcloud.backend.dns.resolvconf import MARKER, ManagedResolvConf, parse, render
from pcloud.server.protocol import Netmap, Peer

ORIGINAL = b"# from DHCP\nsearch lan.example\nnameserver 192.168.0.1\nnameserver 9.9.9.9\n" \
    b"options rotate ndots:2\n"  # fmt: skip


def managed(tmp_path: Path) -> ManagedResolvConf:
    (tmp_path / "etc").mkdir(exist_ok=True)
    return ManagedResolvConf(tmp_path / "etc" / "resolv.conf", tmp_path / "state")


def ours(m: ManagedResolvConf) -> bytes:
    return render("127.0.10.53", "pcloud.internal", m.original(), m.dir)


def test_render_keeps_search_and_options_and_falls_back_to_the_originals() -> None:
    text = render("127.0.10.53", "pcloud.internal", parse(ORIGINAL.decode()), Path("/s")).decode()
    assert text.startswith(MARKER)
    assert "nameserver 127.0.10.53\nnameserver 192.168.0.1\nnameserver 9.9.9.9\n" in text
    assert "search pcloud.internal lan.example\n" in text
    assert "options ndots:2\n" in text  # rotate would send our names elsewhere


@pytest.mark.parametrize("mode", [0o644, 0o600])
def test_install_then_restore_is_byte_exact(tmp_path: Path, mode: int) -> None:
    m = managed(tmp_path)
    m.path.write_bytes(ORIGINAL)
    m.path.chmod(mode)
    m.install(ours(m))
    assert m.path.read_bytes().startswith(MARKER.encode())
    assert m.path.stat().st_mode & 0o777 == mode
    assert m.backup.read_bytes() == ORIGINAL and m.backup.stat().st_mode & 0o777 == 0o600
    m.install(ours(m))  # a second install keeps the true original, not our file
    assert m.backup.read_bytes() == ORIGINAL
    assert m.original().nameservers == ["192.168.0.1", "9.9.9.9"]
    assert m.restore() is True
    assert m.path.read_bytes() == ORIGINAL and m.path.stat().st_mode & 0o777 == mode
    assert not m.backup.exists() and not m.meta.exists()
    assert m.restore() is False  # nothing left to do


def test_a_new_process_recovers_after_a_crash(tmp_path: Path) -> None:
    m = managed(tmp_path)
    m.path.write_bytes(ORIGINAL)
    m.install(ours(m))
    # kill -9: nothing ran; the next backend start builds a fresh manager from the state dir.
    DnsManager(mode="auto", state_dir=tmp_path / "state", interface="pcloud0",
               listen="127.0.10.53", resolv_conf=m.path).recover()  # fmt: skip
    assert m.path.read_bytes() == ORIGINAL


def test_crash_between_backup_and_write_keeps_the_file(tmp_path: Path) -> None:
    m = managed(tmp_path)
    m.path.write_bytes(ORIGINAL)
    m._save_original()  # the backup is on disk, the file never changed
    m.path.write_bytes(b"nameserver 10.1.1.1\n")  # and DHCP rewrote it meanwhile
    assert m.restore() is False and m.path.read_bytes() == b"nameserver 10.1.1.1\n"
    m.install(ours(m))
    assert m.backup.read_bytes() == b"nameserver 10.1.1.1\n"  # the current file is the original


def test_a_file_rewritten_by_someone_else_is_left_alone(tmp_path: Path) -> None:
    m = managed(tmp_path)
    m.path.write_bytes(ORIGINAL)
    m.install(ours(m))
    m.path.write_bytes(b"nameserver 10.2.2.2\n")
    assert m.restore() is False
    assert m.path.read_bytes() == b"nameserver 10.2.2.2\n" and not m.meta.exists()


def test_symlink_and_absent_originals_come_back(tmp_path: Path) -> None:
    m = managed(tmp_path)
    target = tmp_path / "run-resolv.conf"
    target.write_bytes(ORIGINAL)
    os.symlink(target, m.path)
    m.install(ours(m))
    assert not m.path.is_symlink() and target.read_bytes() == ORIGINAL  # the target untouched
    m.restore()
    assert m.path.is_symlink() and os.readlink(m.path) == str(target)
    m.path.unlink()
    m.install(ours(m))
    assert m.path.exists()
    m.restore()
    assert not m.path.exists()


def test_install_refuses_an_unmarked_file(tmp_path: Path) -> None:
    m = managed(tmp_path)
    with pytest.raises(ValueError, match="marker"):
        m.install(b"nameserver 1.1.1.1\n")


async def test_manager_serves_and_restores_on_stop(tmp_path: Path) -> None:
    m = managed(tmp_path)
    m.path.write_bytes(b"nameserver 127.0.0.1\n")
    me = Peer(node_id=1, hostname="me", user="a", role="client", tags=[], public_key="k",
              address="10.0.0.9", endpoints=[], online=True, last_seen=None)  # fmt: skip
    dns = DnsManager(mode="file", state_dir=tmp_path / "state", interface="pcloud0",
                     listen="127.0.0.1", resolv_conf=m.path, port=0)  # fmt: skip
    assert await dns.ensure(Netmap(version=1, full=True, self=me)) is None
    assert dns.active_mode == "file" and dns.server is not None
    text = m.path.read_text()
    assert "nameserver 127.0.0.1\nsearch pcloud.internal\n" in text
    assert dns.server.resolver.upstreams == []  # never forwards to itself
    # The server moved to another domain: the search domain follows, the backup stays the same.
    assert await dns.ensure(Netmap(version=2, full=True, self=me, domain="home.internal")) is None
    assert "search home.internal\n" in m.path.read_text()
    await dns.stop()
    assert m.path.read_bytes() == b"nameserver 127.0.0.1\n" and dns.server is None
