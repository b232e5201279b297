"""Shows a backend job step by step from its events: each step ticked, the failing step named.

The widget only renders `Job` values it is given (`set_job`) and emits `retry_requested`; the
owner starts or resumes the job. Steps are listed in the order the backend reports them.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from pcloud.backend.localapi.schemas import Job

MARKS = {
    "pending": ("○", "#8c959f"),
    "running": ("◔", "#1f6feb"),
    "done": ("✓", "#2da44e"),
    "failed": ("✗", "#cf222e"),
    "skipped": ("–", "#8c959f"),
}


def failure_text(job: Job) -> str | None:
    """ "Step 'start the server' failed: port 8443 is in use" or None."""
    if job.state != "failed":
        return None
    failed = next((s for s in job.steps if s.state == "failed"), None)
    if failed is None:
        return f"The job failed: {job.error or 'no reason given'}"
    reason = failed.detail or job.error or "no reason given"
    return f"Step “{failed.name}” failed: {reason}"


class StepRow(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        self.mark = QLabel()
        self.mark.setFixedWidth(22)
        self.mark.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.name = QLabel()
        self.detail = QLabel()
        self.detail.setStyleSheet("color: #57606a;")
        self.detail.setWordWrap(True)
        layout.addWidget(self.mark)
        layout.addWidget(self.name)
        layout.addWidget(self.detail, 1)

    def show_step(self, name: str, state: str, detail: str | None) -> None:
        mark, color = MARKS.get(state, ("?", "#8c959f"))
        self.mark.setText(mark)
        self.mark.setStyleSheet(f"color: {color}; font-weight: bold; font-size: 15px;")
        self.name.setText(f"<b>{name}</b>" if state == "running" else name)
        self.detail.setText(detail or "")
        self.setProperty("step_state", state)


class JobProgressView(QWidget):
    retry_requested = Signal()
    finished = Signal(object)  # the Job, once done

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.job: Job | None = None
        self._rows: list[StepRow] = []
        layout = QVBoxLayout(self)
        self.headline = QLabel("Starting…")
        self.headline.setStyleSheet("font-weight: bold;")
        self.steps_box = QVBoxLayout()
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #cf222e;")
        self.error.hide()
        self.retry = QPushButton("Retry")
        self.retry.hide()
        self.retry.clicked.connect(self._retry_clicked)
        layout.addWidget(self.headline)
        layout.addLayout(self.steps_box)
        layout.addWidget(self.error)
        row = QHBoxLayout()
        row.addWidget(self.retry)
        row.addStretch(1)
        layout.addLayout(row)
        layout.addStretch(1)

    def _retry_clicked(self) -> None:
        self.retry.setEnabled(False)  # re-enabled by the next failure
        self.headline.setText("Retrying…")
        self.error.hide()
        self.retry_requested.emit()

    def show_start_error(self, text: str) -> None:
        """The job could not even start (e.g. the backend refused the request)."""
        self.headline.setText("Could not start")
        self.error.setText(text)
        self.error.show()
        self.retry.setEnabled(True)
        self.retry.show()

    def set_job(self, job: Job) -> None:
        self.job = job
        while len(self._rows) < len(job.steps):
            row = StepRow(self)
            self._rows.append(row)
            self.steps_box.addWidget(row)
        for row, step in zip(self._rows, job.steps, strict=False):
            row.show_step(step.name, step.state, step.detail)
        for extra in self._rows[len(job.steps) :]:
            extra.hide()
        done = sum(s.state in ("done", "skipped") for s in job.steps)
        failure = failure_text(job)
        if failure:
            self.headline.setText("Stopped on an error")
            self.error.setText(failure)
            self.error.show()
            self.retry.setEnabled(True)
            self.retry.show()
        elif job.state == "done":
            self.headline.setText("Done")
            self.error.hide()
            self.retry.hide()
            self.finished.emit(job)
        else:
            self.headline.setText(f"Working… ({done} of {len(job.steps)} steps done)")
            self.error.hide()
            self.retry.hide()

    def step_states(self) -> list[tuple[str, str]]:
        """(name, state) of each visible step, for tests."""
        if self.job is None:
            return []
        return [(s.name, s.state) for s in self.job.steps]
