"""server/reach: the cluster's public URLs travel in the servers' store records, and every
server's leaf names their hosts; a public URL by name is resolved."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

from pcloud.server.app import open_state
from pcloud.server.config import Listen, Settings
from pcloud.server.reach.public import PublicAddress, cluster_public_urls
from pcloud.server.reach.service import Reach
from pcloud.server.security.tls import TlsFiles, ensure_ca, ensure_leaf, leaf_names

PUBLIC = "https://home.example.net:8443"


def settings(tmp_path: Path, host: str, **kw: object) -> Settings:
    return Settings(
        state_dir=tmp_path,
        listen=(Listen("192.168.0.112", 8443),),
        hostname=host,
        **kw,  # type: ignore[arg-type]
    )


def test_a_server_without_public_url_covers_the_cluster_s_public_hosts(tmp_path: Path) -> None:
    s = settings(tmp_path, "rpi112")
    state = open_state(s)
    try:
        files = TlsFiles.in_dir(tmp_path)
        ensure_ca(files)
        ensure_leaf(files, s.cert_names())
        reach = Reach(s, state)
        assert not reach.refresh_leaf()  # nothing public yet
        # What the store watch brings in: the first server's record with its public URL.
        state.servers["rpi111"] = {"urls": ["https://192.168.0.111:8443", PUBLIC],
                                   "public": [PUBLIC]}  # fmt: skip
        assert cluster_public_urls(state) == [PUBLIC]
        assert reach.refresh_leaf()
        assert {"home.example.net", "192.168.0.112"} <= leaf_names(files)
        assert not reach.refresh_leaf()  # once is enough
    finally:
        state.close()


def test_a_server_publishes_its_public_url_in_its_record(tmp_path: Path) -> None:
    s = settings(tmp_path, "rpi111", public_url=PUBLIC)
    state = open_state(s)
    try:
        asyncio.run(state.publish_self())
        assert state.servers["rpi111"]["public"] == [PUBLIC]
        assert cluster_public_urls(state) == [PUBLIC]
    finally:
        state.close()


def test_a_public_name_is_resolved_and_a_literal_is_kept() -> None:
    literal = PublicAddress("https://203.0.113.10:8443")
    assert literal.current() == ipaddress.ip_address("203.0.113.10")
    assert asyncio.run(literal.refresh()) is None
    named = PublicAddress("https://localhost:8443")
    assert named.current() is None
    change = asyncio.run(named.refresh())
    assert change is not None and change[0] is None and change[1].is_loopback
    assert asyncio.run(named.refresh()) is None  # unchanged
