"""Draws a QR code (segno) for a join link or a pre-auth key, crisp at any size.

Modules are painted as whole-pixel squares rather than scaling a bitmap, so the code stays sharp
on HiDPI screens and in screenshots.
"""

from __future__ import annotations

import segno
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

QUIET_ZONE = 2  # modules of white border; segno's default 4 wastes space in a dialog


class QrView(QWidget):
    def __init__(self, text: str = "", parent: QWidget | None = None, size: int = 180) -> None:
        super().__init__(parent)
        self._matrix: list[list[bool]] = []
        self._size = size
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.set_text(text)

    def set_text(self, text: str) -> None:
        self.text = text
        if text:
            qr = segno.make(text, error="m")
            self._matrix = [[bool(v) for v in row] for row in qr.matrix]
        else:
            self._matrix = []
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(self._size, self._size)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("white"))
        n = len(self._matrix)
        if n == 0:
            return
        cells = n + 2 * QUIET_ZONE
        # Whole-pixel modules: fractional ones come out uneven, which some scanners dislike.
        cell = max(1, min(self.width(), self.height()) // cells)
        side = cell * cells
        origin_x = (self.width() - side) // 2 + QUIET_ZONE * cell
        origin_y = (self.height() - side) // 2 + QUIET_ZONE * cell
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor("black"))
        for y, row in enumerate(self._matrix):
            for x, dark in enumerate(row):
                if dark:
                    painter.drawRect(origin_x + x * cell, origin_y + y * cell, cell, cell)
        painter.end()
