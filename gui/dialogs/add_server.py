""" "Add this machine as server": a confirmation, then the join-server job's progress."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pcloud.gui.dialogs.job_dialog import JobDialog

EXPLANATION = (
    "This machine will join the K3s cluster as a server over the PCloud network and take the "
    "server role: other devices will reach it and it will keep a copy of the control plane.\n\n"
    "It needs a few minutes, a stable power supply and the network to stay up. You can close "
    "this window: the backend carries on, and Retry resumes from the failed step."
)


class AddServerDialog(JobDialog):
    TITLE = "Add this machine as server"
    EXPLANATION = EXPLANATION
    START_TEXT = "Add as server"
    KIND = "join-server"

    def start_request(self) -> Callable[[], Awaitable[str]]:
        session, token = self.session, self.session.token
        return lambda: session.admin.start_join_server(token)
