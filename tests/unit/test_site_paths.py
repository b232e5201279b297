"""The grid test's path predictions (tests/lab/site_paths.py): one pair of each kind."""

from __future__ import annotations

import pytest

from tests.lab.site_paths import Spot, home_spot, matches, predict, site_spot
from tests.lab.sites import HOME_PUBLIC, WG_PORT

RPI111 = home_spot("rpi111", "192.168.0.111", WG_PORT)
RPI112 = home_spot("rpi112", "192.168.0.112")
LAPTOP = site_spot("laptop", "cafe", "10.20.0.2")
PHONE = site_spot("phone", "mobile", "10.30.0.2")
PHONE2 = site_spot("phone2", "mobile2", "10.31.0.2")
DESK = site_spot("desk", "office", "10.40.0.2")


@pytest.mark.parametrize(
    ("src", "dst", "path", "why"),
    [
        (RPI112, RPI111, f"direct 192.168.0.111:{WG_PORT}", "same LAN"),
        (RPI111, RPI112, "direct 192.168.0.112:*", "same LAN"),
        (LAPTOP, RPI111, f"direct {HOME_PUBLIC}:{WG_PORT}", "forwarded port"),
        (RPI111, LAPTOP, "direct 198.51.100.20:*", "forwarded port (answered)"),
        (PHONE, RPI111, f"direct {HOME_PUBLIC}:{WG_PORT}", "forwarded port"),
        (RPI111, PHONE, "direct 198.51.100.30:*", "forwarded port (answered)"),
        (LAPTOP, RPI112, f"direct {HOME_PUBLIC}:*", "hole punched"),
        (RPI112, LAPTOP, "direct 198.51.100.20:*", "hole punched"),
        (PHONE, PHONE2, "relay rpi111", "endpoint-dependent NAT"),
        (LAPTOP, PHONE, "relay rpi111", "endpoint-dependent NAT"),
        (RPI112, PHONE2, "relay rpi111", "endpoint-dependent NAT"),
        # The forward does not help a host that cannot send UDP at all.
        (DESK, RPI111, "relay rpi111 (tcp)", "office drops UDP"),
        (RPI111, DESK, "relay rpi111", "office drops UDP"),
        (DESK, LAPTOP, "relay rpi111 (tcp)", "office drops UDP"),
    ],
)
def test_predicted_path(src: Spot, dst: Spot, path: str, why: str) -> None:
    assert predict(src, dst, "rpi111") == (path, why)


def test_a_glob_over_the_status_text() -> None:
    assert matches("direct 198.51.100.20:40123", "direct 198.51.100.20:*")
    assert not matches("direct 10.20.0.2:40123", "direct 198.51.100.20:*")
    assert not matches("relay rpi111 (tcp)", "relay rpi111")
    assert not matches("relay rpi111", "relay rpi111 (tcp)")
    assert not matches(None, "relay rpi111")
