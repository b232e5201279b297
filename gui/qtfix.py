"""Guards the app against a PySide6 reference-count bug that crashes a long-running process.

In PySide6 6.12.0 `SignalInstance.emit()` returns `True` without taking a reference for it, so
every emit made from Python (ours, and qasync's `call_soon_threadsafe`) drops one reference to
`True`. After a few hundred emits `True`'s count reaches zero and the interpreter aborts with
"Fatal Python error: bool_dealloc". A tray app emits on every status event, so it would die
after minutes to hours (the lab GUI test died at interpreter exit after one install).

`repair_signal_emit()` measures the bug once (a few emits of a private signal) and, only if
the count really drops, wraps `emit` so the missing reference is given back. A fixed PySide6
measures no drop and is left alone.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal, SignalInstance

PROBES = 8
_incref = ctypes.pythonapi.Py_IncRef
_incref.argtypes = [ctypes.py_object]
_incref.restype = None
_repaired = False


class _Probe(QObject):
    ping = Signal()


def references_lost_per_emit() -> int:
    """How many references to `True` one Python `emit()` loses (0 on a sound PySide6)."""
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(PROBES):
        probe.ping.emit()
    lost = before - sys.getrefcount(True)
    for _ in range(max(lost, 0)):
        _incref(True)  # give back what the measurement itself took
    return lost // PROBES if lost >= PROBES else 0


class _Emit:
    """`SignalInstance.emit` that gives back the reference the original fails to take.

    Accessing `signal.emit` answers a `partial` rather than a bound method: PySide connects a
    bound method through a weak reference to its `self`, and a SignalInstance has none, so
    `connect(signal.emit)` and `menu.addAction(text, signal.emit)` would fail."""

    def __init__(self, original: Callable[..., Any]) -> None:
        self.original = original

    def call(self, signal: SignalInstance, *args: Any) -> Any:
        result = self.original(signal, *args)
        if result is True or result is False:
            _incref(result)  # one too many is harmless for a singleton; one too few is fatal
        return result

    def __get__(self, signal: SignalInstance | None, owner: type | None = None) -> Any:
        if signal is None:
            return self
        return functools.partial(self.call, signal)


def repair_signal_emit() -> bool:
    """Wraps `SignalInstance.emit` when it loses references; True if it did (or had)."""
    global _repaired
    if _repaired:
        return True
    if references_lost_per_emit() == 0:
        return False
    setattr(SignalInstance, "emit", _Emit(SignalInstance.emit))  # noqa: B010 - a method to mypy
    _repaired = True
    return True
