"""Admin pages: devices (rename, change role, remove), users (create, delete), pre-auth keys.

Above them, an offer to enable high availability, shown when it applies: the network has at least
three server-role nodes, this device is one of them, and the coordination server this backend
talks to still keeps the state in SQLite (its `GET /health` says `store`). The offer opens a
confirmation, then follows the backend's `ha-enable` job (`HaEnableDialog`).

Every call goes through the backend's coordination passthrough (`AdminAPI`) with the signed-in
user's token. Lists are small and replaced wholesale after each change, so plain table widgets
suffice here. A new pre-auth key is shown once, with Copy and a QR code; the "Add a device" tab
(`InstallTab`) shows the server's one-line install with a QR code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from pcloud.backend.localapi.schemas import Job
from pcloud.gui.dialogs.ha_enable import KIND as HA_ENABLE
from pcloud.gui.dialogs.ha_enable import HaEnableDialog
from pcloud.gui.errors import classify
from pcloud.gui.format import expiry_label
from pcloud.gui.session import Session
from pcloud.gui.views.install_tab import InstallTab
from pcloud.gui.widgets.copy_field import SecretCard

EXPIRIES = [3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400]
HA_MIN_SERVERS = 3  # an etcd cluster that survives the loss of one member


def _table(headers: list[str]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
    table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    table.verticalHeader().hide()
    table.horizontalHeader().setStretchLastSection(True)
    return table


def _fill(table: QTableWidget, rows: list[list[str]]) -> None:
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            table.setItem(r, c, QTableWidgetItem(text))
    table.resizeColumnsToContents()


def _selected(table: QTableWidget, column: int = 0) -> str | None:
    row = table.currentRow()
    item = table.item(row, column) if row >= 0 else None
    return item.text() if item else None


class AdminPage(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.nodes: list[dict[str, Any]] = []
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.message = QLabel()
        self.message.setWordWrap(True)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        top.addWidget(self.message, 1)
        top.addWidget(refresh)
        layout.addLayout(top)
        layout.addWidget(self._ha_offer())
        self.ha_dialog: HaEnableDialog | None = None
        session.job_changed.connect(self._on_job)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._devices_tab(), "Devices")
        self.tabs.addTab(self._users_tab(), "Users")
        self.tabs.addTab(self._keys_tab(), "Pre-auth keys")
        self.install = InstallTab(session)
        self.tabs.addTab(self.install, "Add a device")
        layout.addWidget(self.tabs, 1)

    # -- building ----------------------------------------------------------------------------

    def _devices_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        self.devices = _table(["ID", "Hostname", "User", "Role", "Address", "Online"])
        self.devices.itemSelectionChanged.connect(self._device_selected)
        layout.addWidget(self.devices)
        row = QHBoxLayout()
        self.new_name = QLineEdit()
        self.new_name.setPlaceholderText("New hostname")
        rename = QPushButton("Rename")
        rename.clicked.connect(self._rename)
        self.new_role = QComboBox()
        self.new_role.addItems(["client", "server"])
        change_role = QPushButton("Change role")
        change_role.clicked.connect(self._change_role)
        remove = QPushButton("Remove…")
        remove.clicked.connect(self._confirm_remove)
        for w in (self.new_name, rename, self.new_role, change_role, remove):
            row.addWidget(w)
        layout.addLayout(row)
        return page

    def _ha_offer(self) -> QWidget:
        self.ha_box = QGroupBox("High availability")
        row = QHBoxLayout(self.ha_box)
        self.ha_text = QLabel()
        self.ha_text.setWordWrap(True)
        self.ha_button = QPushButton("Enable high availability…")
        self.ha_button.clicked.connect(self._open_ha_enable)
        row.addWidget(self.ha_text, 1)
        row.addWidget(self.ha_button)
        self.ha_box.hide()
        return self.ha_box

    def _users_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        self.users = _table(["Username", "Admin", "Created"])
        layout.addWidget(self.users)
        form_box = QGroupBox("New user")
        form = QFormLayout(form_box)
        self.user_name = QLineEdit()
        self.user_password = QLineEdit()
        self.user_password.setEchoMode(QLineEdit.EchoMode.Password)
        self.user_admin = QCheckBox("Administrator")
        create = QPushButton("Create user")
        create.clicked.connect(self._create_user)
        form.addRow("Username", self.user_name)
        form.addRow("Password", self.user_password)
        form.addRow(self.user_admin, create)
        layout.addWidget(form_box)
        delete = QPushButton("Delete selected user…")
        delete.clicked.connect(self._confirm_delete_user)
        layout.addWidget(delete)
        return page

    def _keys_tab(self) -> QWidget:
        page = QWidget()
        layout = QHBoxLayout(page)
        left = QVBoxLayout()
        self.keys = _table(["Prefix", "User", "Role", "Reusable", "Expires", "Used"])
        left.addWidget(self.keys)
        form_box = QGroupBox("New key")
        form = QFormLayout(form_box)
        self.key_reusable = QCheckBox("Reusable (otherwise single-use)")
        self.key_expiry = QComboBox()
        for seconds in EXPIRIES:
            self.key_expiry.addItem(expiry_label(seconds), seconds)
        self.key_expiry.setCurrentIndex(1)
        self.key_role = QComboBox()
        self.key_role.addItems(["client", "server"])
        create = QPushButton("Create key")
        create.clicked.connect(self._create_key)
        form.addRow(self.key_reusable)
        form.addRow("Expires in", self.key_expiry)
        form.addRow("Role", self.key_role)
        form.addRow(create)
        left.addWidget(form_box)
        revoke = QPushButton("Revoke selected key")
        revoke.clicked.connect(self._revoke_key)
        left.addWidget(revoke)
        layout.addLayout(left, 1)
        self.new_key = SecretCard("The new key is shown only once: copy it or scan it now.")
        self.new_key.hide()
        layout.addWidget(self.new_key)
        return page

    # -- talking to the backend --------------------------------------------------------------

    def _run(
        self, what: str, call: Callable[[str], Awaitable[Any]], then_refresh: bool = True
    ) -> None:
        token = self.session.token
        if token is None:
            self.message.setText("Sign in as an admin first (Log in… with a password).")
            return

        async def run() -> None:
            self.message.setText(f"{what}…")
            try:
                await call(token)
            except Exception as e:  # noqa: BLE001 - named on the page
                problem = classify(e)
                self.message.setText(f"{what} failed: {problem.detail or problem.title}")
                return
            self.message.setText("")
            if then_refresh:
                await self._load(token)

        self.session.spawn(run())

    def refresh(self) -> None:
        self.install.load()  # public: shown even before an admin signs in
        self._run("Loading", self._load, then_refresh=False)

    async def _load(self, token: str) -> None:
        api = self.session.admin
        self.nodes = [dict(n) for n in await api.nodes(token)]
        _fill(
            self.devices,
            [
                [
                    str(n.get("node_id")),
                    str(n.get("hostname")),
                    str(n.get("user")),
                    str(n.get("role")),
                    str(n.get("address")),
                    "yes" if n.get("online") else "no",
                ]
                for n in self.nodes
            ],
        )
        users = await api.users(token)
        _fill(
            self.users,
            [
                [
                    u["username"],
                    "yes" if u["admin"] else "no",
                    str(u.get("created_at", ""))[:16].replace("T", " "),
                ]
                for u in users
            ],
        )
        keys = await api.auth_keys(token)
        _fill(
            self.keys,
            [
                [
                    str(k.get("prefix")),
                    str(k.get("user")),
                    str(k.get("role")),
                    "yes" if k.get("reusable") else "no",
                    str(k.get("expires_at", ""))[:16].replace("T", " "),
                    "yes" if k.get("used") else "no",
                ]
                for k in keys
            ],
        )
        await self._check_ha()

    async def _check_ha(self) -> None:
        """Show the HA offer when it applies (the lists above loaded, so we are an admin)."""
        servers = sorted(str(n.get("hostname")) for n in self.nodes if n.get("role") == "server")
        status = self.session.status
        me = status.self if status is not None else None
        store = None
        if len(servers) >= HA_MIN_SERVERS and me is not None and me.role == "server":
            try:
                health = await self.session.admin.coord("GET", "/health")
            except Exception:  # noqa: BLE001 - no offer when the server cannot say its store
                health = None
            store = health.get("store") if isinstance(health, dict) else None
        if store != "sqlite":
            self.ha_box.hide()
            return
        self.ha_text.setText(
            f"{len(servers)} servers ({', '.join(servers)}), but the network's state is in "
            "one SQLite file on this server: if it goes down, devices cannot join or change. "
            "Move it to an etcd cluster the servers run together."
        )
        self.ha_box.show()

    def _open_ha_enable(self) -> None:
        if self.ha_dialog is None:
            self.ha_dialog = HaEnableDialog(self.session, self)
        self.ha_dialog.show()
        self.ha_dialog.raise_()

    def _on_job(self, job: Job) -> None:
        if job.kind == HA_ENABLE and job.state == "done" and not self.ha_box.isHidden():
            self.refresh()  # the store is etcd now: the offer goes away

    def _device_selected(self) -> None:
        row = self.devices.currentRow()
        if 0 <= row < len(self.nodes):
            self.new_name.setText(str(self.nodes[row].get("hostname", "")))
            self.new_role.setCurrentText(str(self.nodes[row].get("role", "client")))

    def _selected_node(self) -> int | None:
        text = _selected(self.devices)
        return int(text) if text else None

    def _rename(self) -> None:
        node_id, name = self._selected_node(), self.new_name.text().strip()
        if node_id is not None and name:
            self._run(
                "Renaming", lambda t: self.session.admin.update_node(t, node_id, hostname=name)
            )

    def _change_role(self) -> None:
        node_id, role = self._selected_node(), self.new_role.currentText()
        if node_id is not None:
            self._run(
                "Changing the role", lambda t: self.session.admin.update_node(t, node_id, role=role)
            )

    def _confirm(self, text: str, then: Callable[[], None]) -> None:
        # open(), not exec(): a nested event loop would break qasync.
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "PCloud",
            text,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            self,
        )
        box.accepted.connect(then)
        box.finished.connect(box.deleteLater)
        box.open()

    def _confirm_remove(self) -> None:
        node_id = self._selected_node()
        if node_id is not None:
            name = _selected(self.devices, 1)
            self._confirm(
                f"Remove the device {name}? It leaves every peer list at once.",
                lambda: self._run("Removing", lambda t: self.session.admin.delete_node(t, node_id)),
            )

    def _create_user(self) -> None:
        name, password = self.user_name.text().strip(), self.user_password.text()
        admin = self.user_admin.isChecked()
        if not name or not password:
            self.message.setText("A new user needs a username and a password.")
            return
        self.user_password.clear()
        self._run(
            "Creating the user", lambda t: self.session.admin.create_user(t, name, password, admin)
        )

    def _confirm_delete_user(self) -> None:
        name = _selected(self.users)
        if name:
            self._confirm(
                f"Delete the user {name}?",
                lambda: self._run("Deleting", lambda t: self.session.admin.delete_user(t, name)),
            )

    def _create_key(self) -> None:
        reusable = self.key_reusable.isChecked()
        expires = int(self.key_expiry.currentData())
        role = self.key_role.currentText()

        async def create(token: str) -> None:
            created = await self.session.admin.create_auth_key(
                token, reusable=reusable, expires_in_s=expires, role=role
            )
            self.new_key.set_value(created["key"])
            self.new_key.show()

        self._run("Creating the key", create)

    def _revoke_key(self) -> None:
        prefix = _selected(self.keys)
        if prefix:
            self._run("Revoking", lambda t: self.session.admin.delete_auth_key(t, prefix))
