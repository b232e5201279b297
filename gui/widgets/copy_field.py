"""A read-only text with a Copy button (join links, keys, setup codes), and the secret's card.

`SecretCard` shows a value once with Copy and a QR code: pre-auth keys and join links are never
fetched again, so the card is the only chance to take them.
"""

from __future__ import annotations

from PySide6.QtGui import QFont, QGuiApplication
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pcloud.gui.widgets.qr_view import QrView


class CopyField(QWidget):
    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.field = QLineEdit(text)
        self.field.setReadOnly(True)
        self.field.setFont(QFont("monospace"))
        self.button = QPushButton("Copy")
        self.button.clicked.connect(self.copy)
        layout.addWidget(self.field, 1)
        layout.addWidget(self.button)

    def set_text(self, text: str) -> None:
        self.field.setText(text)
        self.field.setCursorPosition(0)

    def text(self) -> str:
        return self.field.text()

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.field.text())
        self.button.setText("Copied")


class SecretCard(QWidget):
    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel(title)
        self.title.setWordWrap(True)
        self.value = CopyField()
        self.qr = QrView(size=200)
        layout.addWidget(self.title)
        layout.addWidget(self.value)
        layout.addWidget(self.qr)

    def set_value(self, text: str) -> None:
        self.value.set_text(text)
        self.value.button.setText("Copy")
        self.qr.set_text(text)
