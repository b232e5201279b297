"""A coloured banner for problems the user must fix outside the app (backend down, no group).

The fix is a shell command, so the banner shows it in a copyable field rather than prose.
"""

from __future__ import annotations

import re

from PySide6.QtWidgets import QFrame, QLabel, QVBoxLayout, QWidget

from pcloud.gui.errors import Problem
from pcloud.gui.widgets.copy_field import CopyField

_COMMAND = re.compile(r"(sudo [^,\n]+?)(?:,|\n|$)")

STYLES = {
    "error": "background: #ffebe9; border: 1px solid #ff8182; border-radius: 6px;",
    "warning": "background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px;",
}


class NoticeBar(QFrame):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("notice")
        layout = QVBoxLayout(self)
        self.title = QLabel()
        self.title.setStyleSheet("font-weight: bold; border: none; background: transparent;")
        self.detail = QLabel()
        self.detail.setWordWrap(True)
        self.detail.setStyleSheet("border: none; background: transparent;")
        self.command = CopyField()
        layout.addWidget(self.title)
        layout.addWidget(self.detail)
        layout.addWidget(self.command)
        self.hide()

    def show_problem(self, problem: Problem | None, *, level: str = "error") -> None:
        if problem is None:
            self.hide()
            return
        self.setStyleSheet(f"#notice {{ {STYLES[level]} }}")
        self.title.setText(problem.title)
        text = problem.detail
        if problem.kind in ("backend_not_running", "permission"):
            text += "\nPCloud retries on its own and will update as soon as it can connect."
        self.detail.setText(text)
        match = _COMMAND.search(problem.detail)
        self.command.setVisible(match is not None)
        if match:
            self.command.set_text(match.group(1).strip())
        self.show()

    def show_text(self, title: str, text: str, *, level: str = "warning") -> None:
        self.show_problem(Problem("info", title, text), level=level)
