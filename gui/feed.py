"""Follows the backend's `/v1/events` stream and re-emits it as Qt signals; reconnects on its own.

This is the GUI's only source of state: nothing polls `/v1/status` in a loop. When the socket is
missing or refuses us, `unavailable` carries the named problem and the feed retries with a capped
backoff, so starting the backend (or joining the pcloud group) heals the app without a restart.
Each new problem is also logged once as a warning (socket and fix included): someone who starts
`pcloud-gui` from a terminal sees why it shows nothing.
"""

from __future__ import annotations

import asyncio
import logging

from PySide6.QtCore import QObject, Signal

from pcloud.backend.localapi.client import LocalAPIError, LocalClient
from pcloud.backend.localapi.schemas import JobEvent, StatusEvent
from pcloud.gui.errors import Problem, classify
from pcloud.shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0


class EventFeed(QObject):
    status = Signal(object)  # Status
    job = Signal(object)  # Job
    unavailable = Signal(object)  # Problem

    def __init__(self, client: LocalClient, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._client = client
        self._task: asyncio.Task[None] | None = None
        self.retry_first_s = RETRY_FIRST_S
        self.retry_max_s = RETRY_MAX_S
        self._logged: Problem | None = None  # the last problem logged, so it is said once

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        delay = self.retry_first_s
        while True:
            problem: Problem | None = None
            try:
                async for event in self._client.events():
                    delay = self.retry_first_s  # a working stream resets the backoff
                    self._logged = None
                    if isinstance(event, StatusEvent):
                        self.status.emit(event.status)
                    elif isinstance(event, JobEvent):
                        self.job.emit(event.job)
                # A clean end (the backend restarting): reconnect without alarming anyone;
                # if it is really gone, the next attempt names that.
                log.info("event stream ended; reconnecting")
            except LocalAPIError as e:
                problem = classify(e)
            except Exception as e:  # noqa: BLE001 - a broken stream must never end the feed
                log.warning("event stream failed: %s", e)
                problem = classify(e)
            if problem is not None:
                if problem != self._logged:
                    self._logged = problem
                    detail = " ".join(problem.detail.split())
                    log.warning("%s: %s (retrying on its own)", problem.title, detail)
                self.unavailable.emit(problem)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_s)
