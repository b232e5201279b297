"""The login dialog: join link, then a username and password or a pre-auth key.

Opened with `show()`, never `exec()` (a nested loop breaks qasync). Submitting starts
`Session.login` as a task; the dialog stays open and names the error inline (wrong fingerprint,
wrong password, server unreachable, backend not running) or closes on success.
"""

from __future__ import annotations

import asyncio
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QRadioButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from pcloud.gui.errors import Problem
from pcloud.gui.session import LoginForm, Session


class LoginDialog(QDialog):
    logged_in = Signal()

    def __init__(self, session: Session, parent: QWidget | None = None, link: str = "") -> None:
        super().__init__(parent)
        self.session = session
        self.task: asyncio.Task[Any] | None = None
        self.setWindowTitle("Log in to PCloud")
        self.setMinimumWidth(460)
        layout = QVBoxLayout(self)
        intro = QLabel(
            "Paste the join link you were given (it ends in #fp=sha256:…), or the server's address."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.link = QLineEdit(link)
        self.link.setCursorPosition(0)  # the host is the part people check, not the hash
        self.link.setPlaceholderText("https://192.168.1.10:8443/#fp=sha256:…")
        layout.addWidget(self.link)

        self.by_password = QRadioButton("Username and password")
        self.by_key = QRadioButton("Pre-auth key")
        self.by_password.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.by_password)
        group.addButton(self.by_key)
        layout.addWidget(self.by_password)
        layout.addWidget(self.by_key)

        self.pages = QStackedWidget()
        password_page = QWidget()
        form = QFormLayout(password_page)
        self.username = QLineEdit()
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        form.addRow("Username", self.username)
        form.addRow("Password", self.password)
        key_page = QWidget()
        key_form = QFormLayout(key_page)
        self.auth_key = QLineEdit()
        self.auth_key.setEchoMode(QLineEdit.EchoMode.Password)
        key_form.addRow("Key", self.auth_key)
        self.pages.addWidget(password_page)
        self.pages.addWidget(key_page)
        layout.addWidget(self.pages)
        self.by_key.toggled.connect(lambda on: self.pages.setCurrentIndex(1 if on else 0))

        self.error_title = QLabel()
        self.error_title.setStyleSheet("color: #cf222e; font-weight: bold;")
        self.error_detail = QLabel()
        self.error_detail.setWordWrap(True)
        self.error_detail.setStyleSheet("color: #cf222e;")
        layout.addWidget(self.error_title)
        layout.addWidget(self.error_detail)
        self.clear_error()

        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setText("Log in")
        self.buttons.accepted.connect(self.submit)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.problem: Problem | None = None

    def form(self) -> LoginForm | None:
        link = self.link.text().strip()
        if not link:
            self.show_problem(
                Problem(
                    "invalid_link", "No join link", "Paste the join link or the server's address."
                )
            )
            return None
        if self.by_key.isChecked():
            key = self.auth_key.text().strip()
            if not key:
                self.show_problem(Problem("bad_key", "No key", "Paste the pre-auth key."))
                return None
            return LoginForm(link, auth_key=key)
        if not self.username.text().strip() or not self.password.text():
            self.show_problem(
                Problem("wrong_password", "Username and password needed", "Fill in both fields.")
            )
            return None
        return LoginForm(link, username=self.username.text().strip(), password=self.password.text())

    def submit(self) -> None:
        form = self.form()
        if form is None:
            return
        self.clear_error()
        self._set_working(True)
        self.task = self.session.spawn(self._login(form))

    async def _login(self, form: LoginForm) -> None:
        try:
            problem = await self.session.login(form)
        finally:
            self._set_working(False)
        if problem is None:
            self.password.clear()  # never kept past the request
            self.logged_in.emit()
            self.accept()
        else:
            self.show_problem(problem)

    def _set_working(self, working: bool) -> None:
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(not working)
        ok.setText("Logging in…" if working else "Log in")

    def clear_error(self) -> None:
        self.problem = None
        self.error_title.hide()
        self.error_detail.hide()

    def show_problem(self, problem: Problem) -> None:
        self.problem = problem
        self.error_title.setText(problem.title)
        self.error_detail.setText(problem.detail)
        self.error_title.show()
        self.error_detail.show()
        self.adjustSize()  # grow to fit the message rather than squeeze the fields
