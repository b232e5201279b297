"""The "Enable high availability" dialog: a confirmation, then the ha-enable job's progress.

Opened from the admin page on the server that still holds the network's SQLite store. Like the
add-server dialog, it renders job events with the job-progress widget and resumes the job on
Retry (every step is idempotent); it is opened with `show()` and never blocks the loop.
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

KIND = "ha-enable"
EXPLANATION = (
    "The network's coordination state moves from this server's SQLite file to an etcd cluster "
    "that the servers run themselves, so the network keeps working when one server is down.\n\n"
    "This server starts an etcd member, stops its coordination server for the copy (devices "
    "keep their tunnels; changes wait a few seconds), checks the copy record by record and "
    "switches over. If the check fails it goes back to SQLite unchanged.\n\n"
    "Afterwards run `sudo pcloud ha join` on each other server. You can close this window: "
    "the backend carries on, and Retry resumes from the failed step."
)


class HaEnableDialog(QDialog):
    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.job_id: str | None = None
        self.job: Job | None = None
        self.started = False
        self.setWindowTitle("Enable high availability")
        self.setMinimumWidth(520)
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
            "Enable high availability", QDialogButtonBox.ButtonRole.AcceptRole
        )
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
        session = self.session

        async def run() -> None:
            try:
                self.job_id = await session.start_job(session.client.ha_enable)
            except Exception as e:  # noqa: BLE001 - shown in the dialog with a Retry
                problem = classify(e)
                self.progress.show_start_error(f"{problem.title}: {problem.detail}")

        session.spawn(run())

    def on_job(self, job: Job) -> None:
        if not self.started:
            return
        if job.id != self.job_id and not (self.job_id is None and job.kind == KIND):
            return
        self.job_id, self.job = job.id, job
        self.progress.set_job(job)
