"""The admin page's "Add a device" tab: the network's one-line install, with Copy and a QR code.

The line comes from the coordination server this device is logged in to (`GET /api/v1/install`,
relayed by the backend like every admin call): the server's address, its TLS key pin and `pk_...`
where a pre-auth key goes. The answer also lists the packages that server serves, so an empty
packages directory is named here instead of showing up later as a failed download.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from pcloud.gui.adminapi import InstallInfo
from pcloud.gui.errors import classify
from pcloud.gui.session import Session
from pcloud.gui.widgets.copy_field import CopyField
from pcloud.gui.widgets.qr_view import QrView

INTRO = (
    "On a new Debian 12 or Raspberry Pi OS (64-bit) device, run this line in a terminal with a "
    "pre-auth key (tab \u201cPre-auth keys\u201d) in place of pk_...: it installs PCloud from "
    "this server, checked against the server's key, and joins the device. Add --server-role "
    "(with a server-role key) to make it a server too."
)


def packages_note(info: InstallInfo) -> str:
    """Which packages the server serves, or how to give it some."""
    debs = sorted(p for p in info["packages"] if p.startswith("pcloud_"))
    if debs:
        return "This server serves " + ", ".join(debs) + "."
    version = info["version"]
    return (
        f"This server has no pcloud packages to serve yet: on it, run "
        f"sudo install -D -m 0644 -t /var/lib/pcloud/server/packages pcloud_{version}_*.deb"
    )


class InstallTab(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.info: InstallInfo | None = None
        layout = QHBoxLayout(self)
        left = QVBoxLayout()
        intro = QLabel(INTRO)
        intro.setWordWrap(True)
        self.line = CopyField()
        self.note = QLabel()
        self.note.setWordWrap(True)
        reload = QPushButton("Reload")
        reload.clicked.connect(self.load)
        left.addWidget(intro)
        left.addWidget(self.line)
        left.addWidget(self.note)
        left.addWidget(reload, 0, Qt.AlignmentFlag.AlignLeft)
        left.addStretch(1)
        layout.addLayout(left, 1)
        self.qr = QrView(size=240)
        layout.addWidget(self.qr)

    def load(self) -> None:
        self.session.spawn(self._load())

    async def _load(self) -> None:
        self.note.setText("Asking the server for its install line…")
        try:
            info = await self.session.admin.install_info(self.session.token)
        except Exception as e:  # noqa: BLE001 - named in the tab
            problem = classify(e)
            self.note.setText(f"No install line: {problem.detail or problem.title}")
            return
        self.show_info(info)

    def show_info(self, info: InstallInfo) -> None:
        self.info = info
        self.line.set_text(info["line"])
        self.line.button.setText("Copy")
        self.qr.set_text(info["line"])
        self.note.setText(packages_note(info))
