"""The "Enable high availability" dialog: a confirmation, then the ha-enable job's progress.

Opened from the admin page on the server that still holds the network's SQLite store. It is a
`JobDialog`: job events rendered with the job-progress widget, Retry resumes the job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pcloud.gui.dialogs.job_dialog import JobDialog

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


class HaEnableDialog(JobDialog):
    TITLE = "Enable high availability"
    EXPLANATION = EXPLANATION
    START_TEXT = "Enable high availability"
    KIND = KIND
    MIN_WIDTH = 520

    def start_request(self) -> Callable[[], Awaitable[str]]:
        return self.session.client.ha_enable
