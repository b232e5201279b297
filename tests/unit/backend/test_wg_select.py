"""choose_driver(): kernel when the kernel has WireGuard, wireguard-go otherwise."""

from __future__ import annotations

import pytest

from pcloud.backend.wg import select
from pcloud.backend.wg.driver import DriverError
from pcloud.backend.wg.kernel import KernelDriver
from pcloud.backend.wg.userspace import UserspaceDriver


def test_auto_prefers_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select, "kernel_wireguard_available", lambda: True)
    drv = select.choose_driver("pc0")
    assert isinstance(drv, KernelDriver) and drv.kind == "kernel" and drv.name == "pc0"


def test_auto_falls_back_to_userspace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select, "kernel_wireguard_available", lambda: False)
    drv = select.choose_driver("pc0", socket_dir="/tmp/x", binary="/opt/wg-go")
    assert isinstance(drv, UserspaceDriver) and drv.kind == "userspace"
    assert (drv.socket_dir, drv.binary) == ("/tmp/x", "/opt/wg-go")


def test_explicit_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select, "kernel_wireguard_available", lambda: True)
    assert isinstance(select.choose_driver("pc0", prefer="userspace"), UserspaceDriver)
    monkeypatch.setattr(select, "kernel_wireguard_available", lambda: False)
    with pytest.raises(DriverError):
        select.choose_driver("pc0", prefer="kernel")
