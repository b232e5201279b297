"""The main window: this device, the peer table with a filter, admin pages, and a status bar.

Everything here follows the session's signals; nothing polls the backend. A one-second timer only
redraws the "12 s ago" column (the clock moves even when no event arrives).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from pcloud.backend.localapi.schemas import Status
from pcloud.gui.errors import Problem, no_permission
from pcloud.gui.format import icon_key, state_label, status_label
from pcloud.gui.icons import named_icon, state_icon
from pcloud.gui.models.peer_table import ADDRESS, HOSTNAME, PeerFilterProxy, PeerTableModel
from pcloud.gui.session import Session
from pcloud.gui.views.admin_page import AdminPage
from pcloud.gui.widgets.notice import NoticeBar


class MainWindow(QMainWindow):
    login_requested = Signal()
    add_server_requested = Signal()
    quit_requested = Signal()

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.has_tray = True  # without a tray, closing the window is quitting
        self.setWindowTitle("PCloud")
        self.setWindowIcon(named_icon("app"))
        self.resize(980, 560)

        central = QWidget()
        layout = QVBoxLayout(central)
        self.notice = NoticeBar()
        self.keyring_notice = NoticeBar()
        # The coordination server's outage: its own banner, so the reason is read in full
        # (the status bar would cut it) and the other notices keep their own lifecycle.
        self.server_notice = NoticeBar()
        layout.addWidget(self.notice)
        layout.addWidget(self.keyring_notice)
        layout.addWidget(self.server_notice)

        header = QHBoxLayout()
        self.state_icon = QLabel()
        self.state_text = QLabel()
        self.state_text.setStyleSheet("font-size: 16px; font-weight: bold;")
        self.state_text.setWordWrap(True)  # "Connected, coordination server unreachable …"
        self.device = QLabel()
        self.copy_ip = QPushButton("Copy my IP")
        self.copy_ip.clicked.connect(self._copy_own_ip)
        self.toggle = QPushButton()
        self.toggle.clicked.connect(self._toggle)
        self.add_server = QPushButton("Add this machine as server")
        self.add_server.clicked.connect(self.add_server_requested)
        header.addWidget(self.state_icon)
        header.addWidget(self.state_text)
        header.addSpacing(16)
        header.addWidget(self.device, 1)
        header.addWidget(self.copy_ip)
        header.addWidget(self.add_server)
        header.addWidget(self.toggle)
        layout.addLayout(header)

        self.tabs = QTabWidget()
        peers_tab = QWidget()
        peers_layout = QVBoxLayout(peers_tab)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter by name, user, role or address")
        self.filter.setClearButtonEnabled(True)
        self.model = PeerTableModel(self)
        self.proxy = PeerFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.filter.textChanged.connect(self.proxy.set_filter_text)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(HOSTNAME, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.doubleClicked.connect(self._copy_peer_ip)
        peers_layout.addWidget(self.filter)
        peers_layout.addWidget(self.table)
        self.tabs.addTab(peers_tab, "Peers")
        self.admin_page = AdminPage(session)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

        self.status_state = QLabel()
        self.status_server = QLabel()
        self.statusBar().addWidget(self.status_state)
        self.statusBar().addPermanentWidget(self.status_server)

        # Without a tray the window is the whole app, so it carries the tray's account actions.
        account = self.menuBar().addMenu("&PCloud")
        self.login_action = account.addAction("Log in…", self.login_requested.emit)
        self.logout_action = account.addAction("Log out", lambda: self.session.logout())
        account.addSeparator()
        account.addAction("Quit", self.quit_requested.emit)

        self.clock = QTimer(self)
        self.clock.setInterval(1000)
        self.clock.timeout.connect(self.model.tick)
        self.clock.start()

        session.status_changed.connect(self.show_status)
        session.problem_changed.connect(self.show_problem)
        session.busy_changed.connect(lambda _: self.show_status(session.status))
        session.admin_changed.connect(self.show_admin)
        session.failed.connect(lambda p: self.notice.show_problem(p))
        session.notice.connect(lambda title, text: self.statusBar().showMessage(text, 4000))
        self.show_status(session.status)
        self.show_admin(session.is_admin)

    # -- rendering ---------------------------------------------------------------------------

    def show_status(self, status: Status | None) -> None:
        s = self.session
        logged_in = status is not None and status.state != "NeedsLogin"
        can_change = not s.busy and not s.read_only
        self.login_action.setEnabled(status is not None and not logged_in and can_change)
        self.logout_action.setEnabled(logged_in and can_change)
        self.state_icon.setPixmap(state_icon(icon_key(status), busy=s.busy).pixmap(32, 32))
        if status is None:
            self.server_notice.hide()
            self.state_text.setText(state_label(None))
            self.device.setText("")
            self.toggle.setText("Connect")
            self.toggle.setEnabled(False)
            self.copy_ip.setEnabled(False)
            self.add_server.hide()
            self.model.set_peers([])
            self.status_state.setText(s.problem.title if s.problem else "Connecting…")
            self.status_server.setText("")
            return
        if s.read_only:
            self.notice.show_problem(
                no_permission("PCloud is read-only for you until then."), level="warning"
            )
        elif s.problem is None and not self.notice.isHidden() and status.state != "Error":
            self.notice.hide()
        self.state_text.setText(status_label(status))
        if status.unreachable_note():
            why = f"{status.error}\n" if status.error else ""
            self.server_notice.show_text(
                "The coordination server does not answer",
                why + "Your tunnels keep working with the last known peers; new devices and "
                "changes arrive once it answers again.",
            )
        else:
            self.server_notice.hide()
        me = status.self
        self.device.setText(f"This device: {me.hostname} - {me.address}" if me else "")
        self.device.setToolTip(
            f"Other devices reach it as {me.dns_name}" if me and me.dns_name else ""
        )
        self.copy_ip.setEnabled(me is not None)
        if status.state == "NeedsLogin":
            self.toggle.setText("Log in…")
        elif status.state in ("Running", "Starting"):
            self.toggle.setText("Disconnect")
        else:
            self.toggle.setText("Connect")
        self.toggle.setEnabled(not s.busy and not s.read_only)
        self.add_server.setVisible(me is not None and me.role == "client" and s.is_admin)
        # Disconnected, nothing here reaches a peer: listing them as online would mislead.
        self.model.set_peers(status.peers if status.state == "Running" else [])
        # The status bar holds short words only (long reasons are in the banners above); the
        # join link is long, so it shows as HOST:PORT with the whole link as the tooltip.
        self.status_state.setText(state_label(status.state))
        self.status_state.setToolTip(status.error or "")
        server = status.server_url.split("#")[0].rstrip("/") if status.server_url else None
        self.status_server.setText(f"Server: {server}" if server else "No server")
        self.status_server.setToolTip(status.server_url or "")

    def show_problem(self, problem: Problem | None) -> None:
        self.notice.show_problem(problem)

    def show_admin(self, is_admin: bool) -> None:
        index = self.tabs.indexOf(self.admin_page)
        if is_admin and index < 0:
            self.tabs.addTab(self.admin_page, "Admin")
            self.admin_page.refresh()
        elif not is_admin and index >= 0:
            self.tabs.removeTab(index)
        warning = self.session.tokens.warning
        if is_admin and warning:
            self.keyring_notice.show_text("Admin sign-in kept in memory", warning)
        else:
            self.keyring_notice.hide()
        self.show_status(self.session.status)

    # -- actions -----------------------------------------------------------------------------

    def _toggle(self) -> None:
        state = self.session.state
        if state == "NeedsLogin":
            self.login_requested.emit()
        elif state in ("Running", "Starting"):
            self.session.disconnect_vpn()
        else:
            self.session.connect_vpn()

    def _copy_own_ip(self) -> None:
        status = self.session.status
        if status is not None and status.self is not None:
            self.session.copy(status.self.address, "IP address")

    def _copy_peer_ip(self) -> None:
        index = self.table.currentIndex()
        if index.isValid():
            ip = self.proxy.index(index.row(), ADDRESS).data()
            if ip:
                self.session.copy(str(ip), "IP address")

    def closeEvent(self, event: QCloseEvent) -> None:
        # Closing the window leaves the tray running (quit is in the tray menu).
        event.ignore()
        self.hide()
        if not self.has_tray:
            self.quit_requested.emit()
