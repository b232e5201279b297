""""Add this machine as server": a confirmation, then the join-server job's progress.

Like the wizard's progress page, the dialog renders job events and resumes the job on Retry;
it is opened with `show()` and never blocks the loop.
"""

from __future__ import annotations

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from pcloud.backend.localapi.schemas import Job
from pcloud.gui.errors import classify
from pcloud.gui.session import Session
from pcloud.gui.widgets.job_progress import JobProgressView

EXPLANATION = (
    "This machine will join the K3s cluster as a server over the PCloud network and take the "
    "server role: other devices will reach it and it will keep a copy of the control plane.\n\n"
    "It needs a few minutes, a stable power supply and the network to stay up. You can close "
    "this window: the backend carries on, and Retry resumes from the failed step."
)


class AddServerDialog(QDialog):
    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.job_id: str | None = None
        self.job: Job | None = None
        self.started = False
        self.setWindowTitle("Add this machine as server")
        self.setMinimumWidth(480)
        layout = QVBoxLayout(self)
        self.pages = QStackedWidget()
        confirm = QLabel(EXPLANATION)
        confirm.setWordWrap(True)
        self.progress = JobProgressView()
        self.pages.addWidget(confirm)
        self.pages.addWidget(self.progress)
        layout.addWidget(self.pages)
        self.buttons = QDialogButtonBox()
        self.start_button = self.buttons.addButton(
            "Add as server", QDialogButtonBox.ButtonRole.AcceptRole)
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.start_button.clicked.connect(self.start)
        self.close_button.clicked.connect(self.close)
        layout.addWidget(self.buttons)
        self.progress.retry_requested.connect(self.start)
        session.job_changed.connect(self.on_job)

    def start(self) -> None:
        self.started = True
        self.pages.setCurrentIndex(1)
        self.start_button.hide()
        self.close_button.setText("Close")
        session, token = self.session, self.session.token

        async def run() -> None:
            try:
                self.job_id = await session.start_job(
                    lambda: session.admin.start_join_server(token))
            except Exception as e:  # noqa: BLE001 - shown in the dialog with a Retry
                problem = classify(e)
                self.progress.show_start_error(f"{problem.title}: {problem.detail}")

        session.spawn(run())

    def on_job(self, job: Job) -> None:
        if not self.started:
            return
        if job.id != self.job_id and not (self.job_id is None and job.kind == "join-server"):
            return
        self.job_id, self.job = job.id, job
        self.progress.set_job(job)
