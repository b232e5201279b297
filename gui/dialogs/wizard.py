"""First-run wizard: join an existing PCloud, or install the first server on this machine.

Shown when the backend says NeedsLogin and knows no server. The install path asks for the network
and the LAN address, follows the install-server job from its events (Retry resumes it), creates
the first admin with the setup code, and ends connected, showing the join link as text and QR.
Never `exec()`ed: pages start tasks on the session and move on when their signals arrive.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtNetwork import QAbstractSocket, QNetworkInterface
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from pcloud.backend.localapi.schemas import Job
from pcloud.gui.errors import classify
from pcloud.gui.session import Session
from pcloud.gui.widgets.copy_field import CopyField
from pcloud.gui.widgets.job_progress import JobProgressView
from pcloud.gui.widgets.qr_view import QrView

CHOOSE, NETWORK, PROGRESS, ACCOUNT, DONE = range(5)
DEFAULT_NETWORK = "10.0.0.0/24"
DEFAULT_PORT = 8443


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses that other devices could reach (loopback left out)."""
    found = []
    for iface in QNetworkInterface.allInterfaces():
        flags = iface.flags()
        if flags & QNetworkInterface.InterfaceFlag.IsLoopBack:
            continue
        if not flags & QNetworkInterface.InterfaceFlag.IsUp:
            continue
        for entry in iface.addressEntries():
            ip = entry.ip()
            if ip.protocol() == QAbstractSocket.NetworkLayerProtocol.IPv4Protocol:
                found.append(ip.toString())
    return found or ["0.0.0.0"]


def check_network(text: str) -> str | None:
    """The problem with a network CIDR, or None when it will do."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        return f"Not a network in CIDR form (like {DEFAULT_NETWORK}): {e}"
    if net.version != 4 or net.prefixlen > 30:
        return "Use an IPv4 network with room for devices (a prefix of /30 or shorter)"
    return None


def _error_label() -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    label.setStyleSheet("color: #cf222e;")
    return label


class ChoosePage(QWizardPage):
    def __init__(self) -> None:
        super().__init__()
        self.setTitle("Welcome to PCloud")
        self.setSubTitle("This device is not part of a PCloud network yet.")
        layout = QVBoxLayout(self)
        self.join = QRadioButton("Join an existing PCloud (you have a join link)")
        self.install = QRadioButton("Install the first server on this machine")
        self.join.setChecked(True)
        layout.addWidget(self.join)
        layout.addWidget(self.install)
        self.join.toggled.connect(lambda _: self.setFinalPage(self.join.isChecked()))
        self.setFinalPage(True)

    def nextId(self) -> int:
        return -1 if self.join.isChecked() else NETWORK


class NetworkPage(QWizardPage):
    def __init__(self) -> None:
        super().__init__()
        self.setTitle("Your network")
        self.setSubTitle(
            "Devices get addresses from this network; other devices reach the "
            "server on the LAN address."
        )
        form = QFormLayout(self)
        self.network = QLineEdit(DEFAULT_NETWORK)
        self.address = QComboBox()
        self.address.setEditable(True)
        self.address.addItems(lan_addresses())
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(DEFAULT_PORT)
        self.error = _error_label()
        form.addRow("Network (CIDR)", self.network)
        form.addRow("Serve on LAN address", self.address)
        form.addRow("Port", self.port)
        form.addRow(self.error)

    def listen(self) -> str:
        return f"{self.address.currentText().strip()}:{self.port.value()}"

    def validatePage(self) -> bool:
        problem = check_network(self.network.text())
        if problem is None:
            try:
                ipaddress.ip_address(self.address.currentText().strip())
            except ValueError:
                problem = "The LAN address must be an IP address of this machine"
        self.error.setText(problem or "")
        return problem is None


class ProgressPage(QWizardPage):
    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.setTitle("Installing the server")
        self.setSubTitle("Each step is checked off as the backend finishes it.")
        layout = QVBoxLayout(self)
        self.view = JobProgressView()
        layout.addWidget(self.view)
        self.job_id: str | None = None
        self.job: Job | None = None
        self.params: tuple[str, str] | None = None
        self.view.retry_requested.connect(self.start)
        session.job_changed.connect(self.on_job)

    def initializePage(self) -> None:
        wizard: Any = self.wizard()
        params = (wizard.network_page.network.text().strip(), wizard.network_page.listen())
        if params != self.params or self.job is None:
            self.params = params
            self.start()

    def start(self) -> None:
        assert self.params is not None
        network, listen = self.params
        admin = self.session.admin

        async def run() -> None:
            try:
                self.job_id = await self.session.start_job(
                    lambda: admin.start_install_server(network, listen)
                )
            except Exception as e:  # noqa: BLE001 - shown on the page with a Retry
                problem = classify(e)
                self.view.show_start_error(f"{problem.title}: {problem.detail}")

        self.session.spawn(run())

    def on_job(self, job: Job) -> None:
        if job.id != self.job_id and not (self.job_id is None and job.kind == "install-server"):
            return
        self.job_id, self.job = job.id, job
        self.view.set_job(job)
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return self.job is not None and self.job.state == "done"


class AccountPage(QWizardPage):
    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.created = False
        self.setTitle("The first admin account")
        self.setSubTitle("The setup code proves you are at this machine. Keep it private.")
        form = QFormLayout(self)
        self.setup_code = CopyField()
        self.username = QLineEdit()
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.confirm = QLineEdit()
        self.confirm.setEchoMode(QLineEdit.EchoMode.Password)
        self.error = _error_label()
        form.addRow("Setup code", self.setup_code)
        form.addRow("Admin username", self.username)
        form.addRow("Password", self.password)
        form.addRow("Repeat password", self.confirm)
        form.addRow(self.error)

    def initializePage(self) -> None:
        wizard: Any = self.wizard()
        job = wizard.progress_page.job
        result = (job.result if job else None) or {}
        self.setup_code.set_text(str(result.get("setup_code", "")))

    def validatePage(self) -> bool:
        if self.created:
            return True
        if not self.username.text().strip():
            self.error.setText("Choose a username")
        elif len(self.password.text()) < 8:
            self.error.setText("Use a password of at least 8 characters")
        elif self.password.text() != self.confirm.text():
            self.error.setText("The two passwords differ")
        else:
            self.error.setText("Creating the account…")
            self.session.spawn(self._create())
        return False  # the task moves the wizard on when the server agrees

    async def _create(self) -> None:
        username, password = self.username.text().strip(), self.password.text()
        try:
            token = await self.session.admin.setup(self.setup_code.text(), username, password)
        except Exception as e:  # noqa: BLE001 - named on the page
            problem = classify(e)
            self.error.setText(f"{problem.title}: {problem.detail}")
            return
        self.password.clear()
        self.confirm.clear()
        await self.session.remember_token(token)
        self.created = True
        self.error.setText("")
        self.wizard().next()


class DonePage(QWizardPage):
    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.setTitle("PCloud is running")
        self.setSubTitle("Open this join link on your next devices (or scan the code).")
        layout = QVBoxLayout(self)
        self.link = CopyField()
        self.qr = QrView(size=200)
        layout.addWidget(self.link)
        layout.addWidget(self.qr)
        self.setFinalPage(True)

    def initializePage(self) -> None:
        wizard: Any = self.wizard()
        job = wizard.progress_page.job
        result = (job.result if job else None) or {}
        link = str(
            result.get("join_link")
            or (self.session.status.server_url if self.session.status else "")
            or ""
        )
        self.link.set_text(link)
        self.qr.set_text(link)
        if self.session.state in ("Stopped",):
            self.session.connect_vpn()  # the wizard promises to end connected

    def nextId(self) -> int:
        return -1


class FirstRunWizard(QWizard):
    join_requested = Signal()

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Set up PCloud")
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage)
        self.setMinimumSize(560, 460)
        self.choose_page = ChoosePage()
        self.network_page = NetworkPage()
        self.progress_page = ProgressPage(session)
        self.account_page = AccountPage(session)
        self.done_page = DonePage(session)
        for page_id, page in (
            (CHOOSE, self.choose_page),
            (NETWORK, self.network_page),
            (PROGRESS, self.progress_page),
            (ACCOUNT, self.account_page),
            (DONE, self.done_page),
        ):
            self.setPage(page_id, page)
        self.setButtonText(QWizard.WizardButton.FinishButton, "Continue")
        self.currentIdChanged.connect(self._on_page)
        self.accepted.connect(self._on_accepted)

    def _on_page(self, page_id: int) -> None:
        # Once the server is installed there is no going back to change its network.
        self.button(QWizard.WizardButton.BackButton).setEnabled(page_id == NETWORK)
        self.setButtonText(
            QWizard.WizardButton.FinishButton, "Continue" if page_id == CHOOSE else "Finish"
        )

    def _on_accepted(self) -> None:
        if self.choose_page.join.isChecked():
            self.join_requested.emit()
