"""The tray icon and its menu, rebuilt from the session's latest state on every change.

`menu_entries` is a pure function from (status, problem, busy, admin) to a list of entries, so
the menu's content is tested as plain data; `Tray` renders it into a QMenu. The whole menu is
rebuilt with fresh submenus each time (some panels cache submenus and go dead otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from pcloud.backend.localapi.schemas import Status
from pcloud.gui.errors import Problem
from pcloud.gui.format import GROUP_HINT, icon_key, status_label
from pcloud.gui.icons import dot_icon, state_icon
from pcloud.gui.session import Session


@dataclass(frozen=True)
class MenuEntry:
    key: str  # stable name: state, hint, connect, disconnect, self, peers, peer, open, …
    text: str
    enabled: bool = True
    children: tuple[MenuEntry, ...] = ()
    dot: bool | None = None  # online dot for peers
    copy: str | None = None  # what a click copies
    separator_before: bool = False


def _peer_entries(status: Status) -> tuple[MenuEntry, ...]:
    peers = sorted(status.peers, key=lambda p: (not p.online, p.hostname))
    if not peers:
        return (MenuEntry("peer", "No peers yet", enabled=False),)
    return tuple(
        MenuEntry("peer", f"{p.hostname}\t{p.address}", dot=p.online, copy=p.address) for p in peers
    )


def menu_entries(
    status: Status | None,
    problem: Problem | None,
    *,
    busy: bool = False,
    is_admin: bool = False,
    read_only: bool = False,
) -> list[MenuEntry]:
    entries: list[MenuEntry] = []
    busy = busy or read_only  # read-only: every change would be refused, so none is offered
    if status is None:
        title = problem.title if problem else "Connecting to the backend…"
        entries.append(MenuEntry("state", title, enabled=False))
        if problem and problem.detail:
            first_line = problem.detail.splitlines()[0]
            entries.append(MenuEntry("hint", first_line, enabled=False))
        entries.append(MenuEntry("hint", "PCloud keeps retrying on its own", enabled=False))
        entries.append(MenuEntry("open", "Open PCloud", separator_before=True))
        entries.append(MenuEntry("quit", "Quit", separator_before=True))
        return entries

    state = status.state
    line = status_label(status)
    if state == "Error" and status.error:
        line = f"Error: {status.error}"
    entries.append(MenuEntry("state", line, enabled=False))
    if state != "Error" and status.error:  # a warning, e.g. the server is unreachable
        entries.append(MenuEntry("hint", status.error, enabled=False))
    if read_only:
        entries.append(MenuEntry("hint", f"Read-only: run {GROUP_HINT}", enabled=False))

    logged_in = state != "NeedsLogin"
    if logged_in:
        if state in ("Running", "Starting"):
            entries.append(
                MenuEntry("disconnect", "Disconnect", enabled=not busy, separator_before=True)
            )
        else:
            entries.append(MenuEntry("connect", "Connect", enabled=not busy, separator_before=True))
    me = status.self
    if me is not None:
        entries.append(
            MenuEntry(
                "self",
                f"This device: {me.hostname} - {me.address}",
                copy=me.address,
                separator_before=not logged_in,
            )
        )
        if state == "Running":  # disconnected, the netmap's "online" would mislead
            entries.append(MenuEntry("peers", "Peers", children=_peer_entries(status)))
    entries.append(MenuEntry("open", "Open PCloud", separator_before=True))
    if me is not None and me.role == "client" and is_admin:
        entries.append(MenuEntry("add-server", "Add this machine as server", enabled=not busy))
    if logged_in:
        entries.append(MenuEntry("logout", "Log out", enabled=not busy))
    else:
        entries.append(MenuEntry("login", "Log in…", enabled=not busy))
    entries.append(MenuEntry("quit", "Quit", separator_before=True))
    return entries


def tooltip(status: Status | None, problem: Problem | None) -> str:
    if status is None:
        return f"PCloud: {problem.title if problem else 'starting'}"
    text = f"PCloud: {status_label(status)}"
    if status.self is not None:
        text += f" ({status.self.address})"
    return text


class Tray(QObject):
    """Owns the QSystemTrayIcon and renders `menu_entries` into its menu."""

    open_requested = Signal()
    login_requested = Signal()
    add_server_requested = Signal()
    quit_requested = Signal()

    def __init__(self, session: Session, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.menu = QMenu()
        self.icon = QSystemTrayIcon(state_icon(None))
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._activated)
        self._submenus: list[QMenu] = []
        for signal in (
            session.status_changed,
            session.problem_changed,
            session.busy_changed,
            session.admin_changed,
        ):
            signal.connect(self.rebuild)
        session.notice.connect(self._notify)
        self.rebuild()

    def show(self) -> None:
        self.icon.show()

    def entries(self) -> list[MenuEntry]:
        s = self.session
        return menu_entries(
            s.status, s.problem, busy=s.busy, is_admin=s.is_admin, read_only=s.read_only
        )

    def rebuild(self, *_: object) -> None:
        s = self.session
        self.icon.setIcon(state_icon(icon_key(s.status), busy=s.busy))
        self.icon.setToolTip(tooltip(s.status, s.problem))
        self.menu.clear()
        for old in self._submenus:
            old.deleteLater()
        self._submenus = []
        for entry in self.entries():
            if entry.separator_before:
                self.menu.addSeparator()
            if entry.children:
                sub = QMenu(entry.text, self.menu)
                for child in entry.children:
                    self._add(sub, child)
                self._submenus.append(sub)
                self.menu.addMenu(sub)
            else:
                self._add(self.menu, entry)

    def _add(self, menu: QMenu, entry: MenuEntry) -> QAction:
        action = menu.addAction(entry.text)
        action.setEnabled(entry.enabled)
        action.setData(entry.key)
        if entry.dot is not None:
            action.setIcon(dot_icon(entry.dot))
        handler = self._handler(entry)
        if handler is not None:
            action.triggered.connect(handler)
        return action

    def _handler(self, entry: MenuEntry) -> object | None:
        s = self.session
        if entry.copy is not None:
            value, what = entry.copy, "IP address"
            return lambda: s.copy(value, what)
        return {
            "connect": lambda: s.connect_vpn(),
            "disconnect": lambda: s.disconnect_vpn(),
            "logout": lambda: s.logout(),
            "login": self.login_requested.emit,
            "open": self.open_requested.emit,
            "add-server": self.add_server_requested.emit,
            "quit": self.quit_requested.emit,
        }.get(entry.key)

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        # A left click opens the window: users expect something to happen (netbird#3634).
        if reason in (
            QSystemTrayIcon.ActivationReason.Trigger,
            QSystemTrayIcon.ActivationReason.DoubleClick,
        ):
            self.open_requested.emit()

    def _notify(self, title: str, text: str) -> None:
        if self.icon.isVisible() and QSystemTrayIcon.supportsMessages():
            self.icon.showMessage(title, text, QSystemTrayIcon.MessageIcon.Information, 3000)
