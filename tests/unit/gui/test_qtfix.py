"""PySide6's `emit()` must not eat references to `True`: thousands of emits (a tray app's day of
status events) leave the count where it was, and `emit` still works everywhere Qt takes it."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QMenu, QPushButton

from pcloud.gui.qtfix import references_lost_per_emit, repair_signal_emit


class Source(QObject):
    plain = Signal()
    value = Signal(object)


def test_emits_keep_the_reference_count_of_true() -> None:
    source = Source()
    seen: list[object] = []
    source.value.connect(seen.append)
    before = sys.getrefcount(True)
    for n in range(5000):  # unrepaired, a few hundred of these abort the interpreter
        source.plain.emit()
        source.value.emit(n)
    assert sys.getrefcount(True) - before >= 0
    assert references_lost_per_emit() == 0
    assert len(seen) == 5000 and seen[-1] == 4999
    assert repair_signal_emit() in (True, False)  # idempotent


def test_emit_still_connects_as_a_slot() -> None:
    source, target = Source(), Source()
    seen: list[object] = []
    target.plain.connect(lambda: seen.append("plain"))
    target.value.connect(seen.append)
    menu = QMenu()
    menu.addAction("go", target.plain.emit).trigger()
    button = QPushButton()
    button.clicked.connect(target.plain.emit)
    button.click()
    source.value.connect(target.value.emit)
    source.value.emit("forwarded")
    assert seen == ["plain", "plain", "forwarded"]
