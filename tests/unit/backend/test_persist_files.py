"""persist: 0600 secrets, atomic replacement, round trips."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import pytest

from pcloud.backend.persist import NodeInfo, Prefs, Store, atomic_write
from pcloud.server.protocol import Netmap, Peer

KEY = "A" * 43 + "="


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def make_netmap() -> Netmap:
    me = Peer(
        node_id=1,
        hostname="a",
        user="u",
        role="client",
        tags=[],
        public_key=KEY,
        address="10.0.0.2",
        endpoints=[],
        online=True,
        last_seen=datetime.now(UTC),
    )
    return Netmap(version=3, full=True, self=me, peers=[me.model_copy(update={"node_id": 2})])


def test_node_file_is_0600_and_round_trips(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    store.ensure_dir()
    node = NodeInfo(
        7, "secret-token", "https://h:1/#fp=sha256:" + "0" * 64, "10.0.0.7", "10.0.0.0/24", "dev"
    )
    store.save_node(node)
    assert mode(store.node_path) == 0o600
    assert mode(store.dir) == 0o700
    assert store.load_node() == node
    assert "secret-token" not in repr(node)


def test_netmap_prefs_ca_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.load_netmap() is None and store.load_node() is None and store.load_ca() is None
    assert store.load_prefs() == Prefs(want_running=True)
    nm = make_netmap()
    store.save_netmap(nm)
    store.save_prefs(Prefs(want_running=False))
    store.save_ca("PEM")
    assert store.load_netmap() == nm
    assert store.load_prefs().want_running is False
    assert store.load_ca() == "PEM"
    store.forget_node()
    assert store.load_netmap() is None and store.load_ca() == "PEM"


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"old")
    with mock.patch("os.replace", side_effect=OSError("disk full")), pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]  # no temporary file left behind


def test_atomic_write_never_widens_mode(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    old = os.umask(0)
    try:
        atomic_write(target, b"x")
    finally:
        os.umask(old)
    assert mode(target) == 0o600
    atomic_write(target, b"y", mode=0o644)
    assert mode(target) == 0o644
