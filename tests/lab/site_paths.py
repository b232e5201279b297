"""Which path each pair of lab site hosts should take, predicted from their sites' NAT kinds
(DESIGN section 9); pure, so its rules have a unit test (tests/unit/test_site_paths.py) and the
grid test (tests/e2e/test_site_grid.py) compares `pcloud status` against them.

The rules, seen from `src` looking at `dst` (the path text `pcloud status` shows on `src`):

- same site: LAN neighbours talk on their LAN addresses;
- either side in the office (all outgoing UDP dropped): the relay, over TCP from the office side;
- `dst` has the router's UDP forward: `src` sends to the forward (the public address, the port);
- `src` has the forward: `dst` reached it first, and WireGuard answers where `dst` came from
  (`dst`'s public address, whatever port its NAT chose);
- both behind endpoint-independent NATs (Linux masquerade): crossing handshakes open both, so
  direct on the public addresses (hole punched);
- otherwise (an endpoint-dependent "symmetric" NAT on one side): the relay over UDP.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import NamedTuple

from .sites import HOME_PUBLIC, SITES


@dataclass(frozen=True)
class Spot:
    """Where a host sits: its site (one LAN), the site's NAT kind (`SiteSpec.nat`), its private
    address, the public address others see it from, and the UDP port the router forwards to it
    (its WireGuard listen port too), if any."""

    name: str
    site: str
    nat: str  # "masquerade" (endpoint-independent), "symmetric" or "tcp-only"
    private: str
    public: str
    forward: int | None = None


class Prediction(NamedTuple):
    path: str  # a glob over the status path, e.g. "direct 198.51.100.20:*" or "relay rpi111"
    why: str


def home_spot(name: str, private: str, forward: int | None = None) -> Spot:
    """A host on the home LAN (behind the home router's masquerade)."""
    return Spot(name, "home", "masquerade", private, HOME_PUBLIC, forward)


def site_spot(name: str, site: str, private: str) -> Spot:
    """The host of one of `sites.SITES` (cafe, mobile, mobile2, office)."""
    spec = SITES[site]
    return Spot(name, site, spec.nat, private, spec.wan)


def predict(src: Spot, dst: Spot, relay: str) -> Prediction:
    """The path `src` should show for `dst` when `relay` is the relaying server's name."""
    if src.site == dst.site:
        return Prediction(f"direct {dst.private}:{dst.forward or '*'}", "same LAN")
    if "tcp-only" in (src.nat, dst.nat):
        tcp = " (tcp)" if src.nat == "tcp-only" else ""
        return Prediction(f"relay {relay}{tcp}", "office drops UDP")
    if dst.forward:
        return Prediction(f"direct {dst.public}:{dst.forward}", "forwarded port")
    if src.forward:
        return Prediction(f"direct {dst.public}:*", "forwarded port (answered)")
    if src.nat == dst.nat == "masquerade":
        return Prediction(f"direct {dst.public}:*", "hole punched")
    return Prediction(f"relay {relay}", "endpoint-dependent NAT")


def matches(observed: str | None, predicted: str) -> bool:
    return observed is not None and fnmatchcase(observed, predicted)
