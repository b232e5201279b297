"""FakeDriver behaves like a driver: diffs, records, reports stats, fails on request."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pcloud.backend.keys import PrivateKey
from pcloud.backend.wg.driver import Driver, DriverError, InterfaceConfig, PeerConfig
from pcloud.backend.wg.fake import FakeDriver
from pcloud.backend.wg.link import FALLBACK_MTU, RELAY_OVERHEAD, compute_mtu
from pcloud.server.protocol import relay as wire

KEY = PrivateKey.generate()
P1, P2 = (PrivateKey.generate().public_key() for _ in range(2))


async def test_fake_records_and_diffs() -> None:
    drv: Driver = FakeDriver("pc0")
    fake = drv
    assert isinstance(fake, FakeDriver)
    await drv.start()
    c1 = InterfaceConfig(KEY.b64(), "10.0.0.1/24", peers=(PeerConfig(P1, ("10.0.0.2/32",)),))
    await drv.apply(c1)
    c2 = InterfaceConfig(
        KEY.b64(), "10.0.0.1/24", peers=(PeerConfig(P2, ("10.0.0.3/32",), "192.0.2.1:5"),)
    )
    await drv.apply(c2)
    assert fake.applied == [c1, c2]
    assert [op.action for op in fake.changes[1].peers] == ["remove", "add"]
    await drv.apply(c2)
    assert fake.changes[2].empty
    when = datetime(2026, 1, 1, tzinfo=UTC)
    fake.set_peer_stats(P2, last_handshake=when, rx_bytes=5)
    (s,) = await drv.stats()
    assert (s.public_key, s.endpoint, s.last_handshake, s.rx_bytes) == (P2, "192.0.2.1:5", when, 5)
    assert await drv.listen_port() == 51820
    await drv.close(remove_interface=True)
    assert fake.removed and await drv.listen_port() == 0


async def test_fake_fail_next() -> None:
    fake = FakeDriver()
    fake.fail_next(DriverError("boom"))
    with pytest.raises(DriverError):
        await fake.start()
    await fake.start()
    assert fake.started


def test_compute_mtu() -> None:
    # 80 for WireGuard over IPv6, 33 for the relay's frame header: a relayed packet fits too.
    assert RELAY_OVERHEAD == wire.HEADER_LEN
    assert compute_mtu(1500) == 1387
    assert compute_mtu(9000) == 8887
    assert compute_mtu(1300) == 1280
    assert compute_mtu(None) == FALLBACK_MTU == 1387
    assert compute_mtu(0) == FALLBACK_MTU
