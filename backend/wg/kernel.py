"""The kernel driver: a `wireguard` link configured through pyroute2's WireGuard generic netlink.

Used when the kernel has WireGuard (see `kernel_wireguard_available`). Keys and peers go over
generic netlink; address, MTU and routes go through `link.py` like the userspace driver. The
kernel owns the interface, so there is nothing to supervise and a backend restart simply finds
the link again.

pyroute2 0.9's `WireGuard.set()` takes one peer per call, so a change is a short series of
netlink requests rather than one transaction; each request is itself atomic.
"""

from __future__ import annotations

import base64
import os
import platform
import struct
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pyroute2 import AsyncIPRoute, AsyncWireGuard
from pyroute2.netlink.exceptions import NetlinkError

from pcloud.backend.keys import PrivateKey, encode_key
from pcloud.backend.wg import link
from pcloud.backend.wg.diff import (
    ConfigDiff,
    DeviceState,
    PeerOp,
    PeerState,
    applied_endpoints,
    applied_tries,
    diff,
)
from pcloud.backend.wg.driver import DriverError, InterfaceConfig, PeerStats


def kernel_wireguard_available() -> bool:
    """Whether the kernel can create `wireguard` links, without loading anything: the module is
    loaded, built in, or present on disk (then creating the link autoloads it)."""
    if os.path.isdir("/sys/module/wireguard"):
        return True
    moddir = os.path.join("/lib/modules", platform.release())
    try:
        with open(os.path.join(moddir, "modules.builtin"), encoding="utf-8") as f:
            if any(line.rstrip().endswith("/wireguard.ko") for line in f):
                return True
    except OSError:
        pass
    try:
        with open(os.path.join(moddir, "modules.dep"), encoding="utf-8") as f:
            return any("/wireguard.ko" in line.split(":", 1)[0] for line in f)
    except OSError:
        return False


async def probe_kernel_wireguard(name: str = "pcwgprobe0") -> bool:
    """Definitive check: try to create (and delete) a `wireguard` link in this namespace."""
    async with AsyncIPRoute() as ipr:
        try:
            await ipr.link("add", ifname=name, kind="wireguard")
        except NetlinkError:
            return False
        try:
            await ipr.link("del", ifname=name)
        except NetlinkError:
            pass
    return True


def _b64(value: Any) -> str | None:
    """A key attribute as base64, whichever shape pyroute2 decoded it into."""
    if value is None:
        return None
    if hasattr(value, "get"):
        if value.get("value") is not None:
            value = value.get("value")
        elif value.get("key") is not None:
            return encode_key(bytes(value.get("key")))
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        return encode_key(raw) if len(raw) == 32 else raw.decode("ascii")
    return str(value)


def _peer_state(peer: Any) -> PeerState:
    endpoint = None
    ep = peer.get_attr("WGPEER_A_ENDPOINT")
    if ep is not None and ep.get("addr") and ep.get("port"):
        addr, port = ep.get("addr"), ep.get("port")
        endpoint = f"[{addr}]:{port}" if ":" in str(addr) else f"{addr}:{port}"
    handshake = None
    hs = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
    if hs is not None and (hs.get("tv_sec") or hs.get("tv_nsec")):
        handshake = datetime.fromtimestamp(hs["tv_sec"] + hs["tv_nsec"] / 1e9, tz=UTC)
    allowed = tuple(
        str(a.get("addr")) for a in (peer.get_attr("WGPEER_A_ALLOWEDIPS") or ()) if a.get("addr")
    )
    key = _b64(peer.get_attr("WGPEER_A_PUBLIC_KEY"))
    if key is None:
        raise DriverError("kernel reported a peer without a public key")
    return PeerState(
        public_key=key,
        endpoint=endpoint,
        allowed_ips=allowed,
        persistent_keepalive=int(peer.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") or 0),
        last_handshake=handshake,
        rx_bytes=int(peer.get_attr("WGPEER_A_RX_BYTES") or 0),
        tx_bytes=int(peer.get_attr("WGPEER_A_TX_BYTES") or 0),
    )


def device_state(messages: Iterable[Any]) -> DeviceState:
    """Merge the (possibly several, for many peers) WG_CMD_GET_DEVICE answers."""
    private_key: PrivateKey | None = None
    listen_port = fwmark = 0
    peers: list[PeerState] = []
    for msg in messages:
        key = _b64(msg.get_attr("WGDEVICE_A_PRIVATE_KEY"))
        if key is not None:
            raw = base64.b64decode(key)
            private_key = PrivateKey(raw) if any(raw) else None
        listen_port = int(msg.get_attr("WGDEVICE_A_LISTEN_PORT") or listen_port)
        fwmark = int(msg.get_attr("WGDEVICE_A_FWMARK") or fwmark)
        peers.extend(_peer_state(p) for p in msg.get_attr("WGDEVICE_A_PEERS") or ())
    return DeviceState(
        private_key=private_key, listen_port=listen_port, fwmark=fwmark, peers=tuple(peers)
    )


def _peer_request(op: PeerOp) -> dict[str, Any]:
    req: dict[str, Any] = {"public_key": op.public_key}
    if op.action == "remove":
        req["remove"] = True
        return req
    if op.action == "update":
        req["update_only"] = True
    if op.endpoint is not None:
        host, _, port = op.endpoint.rpartition(":")
        req["endpoint_addr"] = host.strip("[]")
        req["endpoint_port"] = int(port)
    if op.persistent_keepalive is not None:
        req["persistent_keepalive"] = op.persistent_keepalive
    if op.allowed_ips is not None:
        req["replace_allowed_ips"] = True
        req["allowed_ips"] = list(op.allowed_ips)
    return req


class KernelDriver:
    """One kernel WireGuard interface."""

    kind = "kernel"

    def __init__(self, name: str) -> None:
        self.name = name
        self._started = False
        # The endpoints the last apply wanted: re-applies leave WireGuard's roaming alone.
        self._applied: dict[str, str | None] | None = None
        self._tries: dict[str, int] | None = None

    async def _wg(self) -> Any:
        try:
            return AsyncWireGuard()
        except Exception as exc:  # no generic netlink family: module missing
            raise DriverError(f"WireGuard generic netlink unavailable: {exc}") from None

    async def _state(self) -> DeviceState:
        wg = await self._wg()
        try:
            return device_state([m async for m in await wg.info(self.name)])
        except (NetlinkError, OSError) as exc:
            raise DriverError(f"cannot read {self.name}: {exc}") from None
        finally:
            wg.close()

    async def _set(self, change: ConfigDiff) -> None:
        if change.empty:
            return
        wg = await self._wg()
        try:
            if change.private_key is not None or change.listen_port is not None:
                await wg.set(
                    self.name,
                    private_key=change.private_key.b64() if change.private_key else None,
                    listen_port=change.listen_port,
                )
            for op in change.peers:
                await wg.set(self.name, peer=_peer_request(op))
        except (NetlinkError, ValueError, OSError, TypeError, struct.error) as exc:
            # pyroute2 encodes attributes itself: a value it cannot pack (e.g. inet_pton
            # refusing an address) raises OSError/struct.error, which must not escape as
            # anything but "this apply failed".
            raise DriverError(f"cannot configure {self.name}: {exc}") from None
        finally:
            wg.close()

    async def start(self) -> None:
        kind = await link.link_kind(self.name)
        if kind is None:
            await link.create_link(self.name, "wireguard")
        elif kind != "wireguard":
            raise DriverError(f"{self.name} exists but is a {kind} link, not wireguard")
        self._started = True

    async def apply(self, config: InterfaceConfig) -> None:
        await self._set(diff(await self._state(), config, self._applied, self._tries))
        self._applied, self._tries = applied_endpoints(config), applied_tries(config)
        await link.configure(self.name, config.address, mtu=config.mtu, routes=config.routes)

    async def stats(self) -> list[PeerStats]:
        return (await self._state()).stats()

    async def listen_port(self) -> int:
        try:
            return (await self._state()).listen_port
        except DriverError:
            return 0

    async def close(self, *, remove_interface: bool) -> None:
        self._started = False
        if remove_interface:
            await link.delete_link(self.name)
