"""The WireGuard driver contract: the whole desired interface config in, the difference applied.

Two implementations satisfy `Driver`: `kernel.KernelDriver` (pyroute2 netlink, when the module
exists) and `userspace.UserspaceDriver` (a supervised `wireguard-go -f IFNAME` configured over its
UAPI socket). `fake.FakeDriver` is an in-memory one for unit tests of the backend core. The core
never talks to WireGuard any other way (DESIGN section 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class PeerConfig:
    """One peer as WireGuard should have it."""

    public_key: str  # WireGuard base64, 32 bytes
    allowed_ips: tuple[str, ...]  # CIDRs, e.g. ("10.0.0.2/32",)
    endpoint: str | None = None  # "ip:port" or "[v6]:port"
    persistent_keepalive: int | None = None  # seconds; None or 0 = off
    # Raised to have WireGuard send a new handshake initiation now to a peer it has no session
    # with: after an unanswered one it waits 5 s (REKEY_TIMEOUT), e.g. when the first reached a
    # peer that did not know us yet. A peer whose value changed is set afresh if sessionless.
    handshake_try: int = 0


@dataclass(frozen=True)
class InterfaceConfig:
    """The whole desired state of the one PCloud interface."""

    private_key: str  # WireGuard base64; goes nowhere but into the interface
    address: str  # overlay address with prefix, e.g. "10.0.0.2/24"
    listen_port: int | None = None  # None: keep the current port (or let WireGuard pick one)
    mtu: int | None = None  # None: underlying link MTU - 113, never below 1280
    peers: tuple[PeerConfig, ...] = ()
    # Extra routes through the interface besides the address's own prefix route.
    routes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class PeerStats:
    """What WireGuard reports about one peer."""

    public_key: str
    endpoint: str | None
    last_handshake: datetime | None  # None: never
    rx_bytes: int
    tx_bytes: int


class DriverError(Exception):
    """WireGuard could not be configured; the message says what failed."""


class Driver(Protocol):
    """One WireGuard interface, configured by desired state."""

    name: str  # the interface name, e.g. "pcloud0"
    kind: str  # "kernel", "userspace" or "fake"

    async def start(self) -> None:
        """Create the interface, or adopt it if it already exists (a backend restart must not
        drop established tunnels)."""

    async def apply(self, config: InterfaceConfig) -> None:
        """Make the interface match `config`, changing only what differs. Never recreates it."""

    async def stats(self) -> list[PeerStats]:
        """Per-peer endpoint, last handshake and byte counters as WireGuard sees them."""

    async def listen_port(self) -> int:
        """The UDP port the interface listens on (0 if not up)."""

    async def close(self, *, remove_interface: bool) -> None:
        """Stop supervising; with `remove_interface` also delete the interface (Disconnect,
        logout). Without it the interface and its tunnels stay as they are (backend restart)."""


@dataclass(frozen=True)
class DriverEvent:
    """Something the driver did on its own, reported through its `on_event` callback so the core
    can show it (e.g. wireguard-go died and was restarted)."""

    kind: str  # "started", "adopted", "exited", "restarted", "restart_failed"
    detail: str = ""
