"""A confirmation, then a backend job's progress: the shape of every "do this big thing" dialog.

Subclasses say what the job is (title, explanation, button, job kind) and how to start it. The
dialog renders the job's events with the job-progress widget and resumes the job on Retry (every
step of our jobs is idempotent); it is opened with `show()` and never blocks the loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

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


class JobDialog(QDialog):
    TITLE = ""
    EXPLANATION = ""
    START_TEXT = ""
    KIND = ""  # the job kind whose events this dialog follows
    MIN_WIDTH = 480

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.job_id: str | None = None
        self.job: Job | None = None
        self.started = False
        self.setWindowTitle(self.TITLE)
        self.setMinimumWidth(self.MIN_WIDTH)
        layout = QVBoxLayout(self)
        self.pages = QStackedWidget()
        confirm = QLabel(self.EXPLANATION)
        confirm.setWordWrap(True)
        self.progress = JobProgressView()
        self.pages.addWidget(confirm)
        self.pages.addWidget(self.progress)
        layout.addWidget(self.pages)
        self.buttons = QDialogButtonBox()
        self.start_button = self.buttons.addButton(
            self.START_TEXT, QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.start_button.clicked.connect(self.start)
        self.close_button.clicked.connect(self.close)
        layout.addWidget(self.buttons)
        self.progress.retry_requested.connect(self.start)
        session.job_changed.connect(self.on_job)

    def start_request(self) -> Callable[[], Awaitable[str]]:
        """The call that starts (or resumes) the job and answers its id."""
        raise NotImplementedError

    def start(self) -> None:
        self.started = True
        self.pages.setCurrentIndex(1)
        self.start_button.hide()
        self.close_button.setText("Close")
        request = self.start_request()

        async def run() -> None:
            try:
                self.job_id = await self.session.start_job(request)
            except Exception as e:  # noqa: BLE001 - shown in the dialog with a Retry
                problem = classify(e)
                self.progress.show_start_error(f"{problem.title}: {problem.detail}")

        self.session.spawn(run())

    def on_job(self, job: Job) -> None:
        if not self.started:
            return
        if job.id != self.job_id and not (self.job_id is None and job.kind == self.KIND):
            return
        self.job_id, self.job = job.id, job
        self.progress.set_job(job)
