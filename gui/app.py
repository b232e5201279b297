"""Builds the app's parts (session, tray, main window, dialogs) and wires their signals together.

Dialogs are opened with `show()` and kept as attributes so a second request raises the open one
instead of stacking copies. With no system tray (offscreen Qt, GNOME without the AppIndicator
extension, pure Wayland) the main window is the app, and closing it quits.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QSystemTrayIcon, QWidget

from pcloud.backend.localapi.client import LocalClient
from pcloud.backend.localapi.schemas import Status
from pcloud.gui.dialogs.add_server import AddServerDialog
from pcloud.gui.dialogs.login import LoginDialog
from pcloud.gui.dialogs.wizard import FirstRunWizard
from pcloud.gui.secrets import TokenStore
from pcloud.gui.session import Session
from pcloud.gui.tray import Tray
from pcloud.gui.views.main_window import MainWindow

log = logging.getLogger(__name__)


def _raise(widget: QWidget) -> None:
    widget.show()
    widget.raise_()
    widget.activateWindow()


class PCloudApp(QObject):
    quit_requested = Signal()

    def __init__(
        self,
        client: LocalClient,
        tokens: TokenStore,
        *,
        use_tray: bool | None = None,
        start_hidden: bool = False,
    ) -> None:
        super().__init__()
        self.session = Session(client, tokens, self)
        self.window = MainWindow(self.session)
        if use_tray is None:
            use_tray = QSystemTrayIcon.isSystemTrayAvailable()
        self.tray: Tray | None = Tray(self.session, self) if use_tray else None
        self.window.has_tray = self.tray is not None
        self.start_hidden = start_hidden and self.tray is not None
        self.login_dialog: LoginDialog | None = None
        self.wizard: FirstRunWizard | None = None
        self.add_server_dialog: AddServerDialog | None = None
        self._wizard_offered = False

        self.window.login_requested.connect(self.open_login)
        self.window.add_server_requested.connect(self.open_add_server)
        self.window.quit_requested.connect(self.quit_requested)
        if self.tray is not None:
            self.tray.open_requested.connect(self.show_window)
            self.tray.login_requested.connect(self.open_login)
            self.tray.add_server_requested.connect(self.open_add_server)
            self.tray.quit_requested.connect(self.quit_requested)
        self.session.status_changed.connect(self._maybe_first_run)

    def start(self, *, follow_events: bool = True) -> None:
        if self.tray is not None:
            self.tray.show()
        else:
            log.info("no system tray here: the main window stands in for it")
        if not self.start_hidden:
            self.show_window()
        if follow_events:
            self.session.start()

    async def shutdown(self) -> None:
        await self.session.close()
        if self.tray is not None:
            self.tray.icon.hide()

    # -- windows -----------------------------------------------------------------------------

    def show_window(self) -> None:
        _raise(self.window)

    def open_login(self, link: str = "") -> LoginDialog:
        if self.login_dialog is None or not self.login_dialog.isVisible():
            self.login_dialog = LoginDialog(self.session, self.window, link=link)
        _raise(self.login_dialog)
        return self.login_dialog

    def open_wizard(self) -> FirstRunWizard:
        if self.wizard is None or not self.wizard.isVisible():
            self.wizard = FirstRunWizard(self.session)
            self.wizard.join_requested.connect(self.open_login)
        _raise(self.wizard)
        return self.wizard

    def open_add_server(self) -> AddServerDialog:
        if self.add_server_dialog is None or not self.add_server_dialog.isVisible():
            self.add_server_dialog = AddServerDialog(self.session, self.window)
        _raise(self.add_server_dialog)
        return self.add_server_dialog

    def _maybe_first_run(self, status: Status | None) -> None:
        # Offered once per run: a user who closes the wizard can still use Log in….
        if status is not None and self.session.needs_first_run and not self._wizard_offered:
            self._wizard_offered = True
            self.open_wizard()
