"""Pick the WireGuard driver for this machine: the kernel one when the kernel has WireGuard,
wireguard-go otherwise (DESIGN section 4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pcloud.backend.wg.driver import Driver, DriverError, DriverEvent
from pcloud.backend.wg.kernel import KernelDriver, kernel_wireguard_available
from pcloud.backend.wg.uapi_client import DEFAULT_SOCKET_DIR
from pcloud.backend.wg.userspace import UserspaceDriver


def choose_driver(
    name: str,
    *,
    prefer: Literal["auto", "kernel", "userspace"] = "auto",
    socket_dir: str = DEFAULT_SOCKET_DIR,
    binary: str = "wireguard-go",
    on_event: Callable[[DriverEvent], None] | None = None,
) -> Driver:
    """A driver for interface `name`. "auto" takes the kernel driver when the module is loaded,
    built in or installed, else wireguard-go; "kernel" fails if the kernel cannot do it."""
    if prefer == "kernel" and not kernel_wireguard_available():
        raise DriverError("the kernel has no WireGuard module")
    if prefer == "kernel" or (prefer == "auto" and kernel_wireguard_available()):
        return KernelDriver(name)
    if prefer not in ("auto", "userspace"):
        raise DriverError(f"unknown WireGuard driver preference {prefer!r}")
    return UserspaceDriver(name, socket_dir=socket_dir, binary=binary, on_event=on_event)
