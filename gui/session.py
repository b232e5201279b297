"""The GUI's one view of the backend: latest status, availability, admin sign-in, running actions.

Widgets never await anything. They call a `Session` method, which starts a task on the qasync
loop and returns at once; results come back as signals. That keeps the UI thread free while a
request is in flight, and keeps every `await` out of Qt slots that might nest event loops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QGuiApplication

from pcloud.backend.localapi.client import BackendError, LocalClient
from pcloud.backend.localapi.schemas import Job, Status
from pcloud.gui.adminapi import AdminAPI, CoordError
from pcloud.gui.errors import Problem, classify
from pcloud.gui.feed import EventFeed
from pcloud.gui.secrets import TokenStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoginForm:
    server_url: str
    username: str | None = None
    password: str | None = None
    auth_key: str | None = None


def server_key(link: str | None) -> str | None:
    """`https://host:port/#fp=…` -> `https://host:port`: what tokens are filed under."""
    if not link:
        return None
    parts = urlsplit(link)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else None


def normalise_link(text: str) -> str:
    """Accepts `host:port/#fp=…` without a scheme, as people paste it from chat."""
    text = text.strip()
    if text and "://" not in text:
        text = "https://" + text
    return text


class Session(QObject):
    status_changed = Signal(object)  # Status, or None while the backend is unavailable
    problem_changed = Signal(object)  # Problem or None
    busy_changed = Signal(bool)
    admin_changed = Signal(bool)
    job_changed = Signal(object)  # Job
    failed = Signal(object)  # Problem from an action the user started
    notice = Signal(str, str)  # title, text: "Copied", …

    def __init__(
        self, client: LocalClient, tokens: TokenStore, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.client = client
        self.admin = AdminAPI(client)
        self.tokens = tokens
        self.feed = EventFeed(client, self)
        self.status: Status | None = None
        self.problem: Problem | None = None
        self.busy = False
        self.is_admin = False
        # On the backend's read-only socket (not in the pcloud group): reads work, changes don't.
        self.read_only = False
        self.token: str | None = None
        self.jobs: dict[str, Job] = {}
        self._job_seq = 0  # counts job updates applied
        self._job_seen: dict[str, int] = {}  # job id -> `_job_seq` of its latest update
        self._server: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.feed.status.connect(self.apply_status)
        self.feed.job.connect(self.apply_job)
        self.feed.unavailable.connect(self.apply_problem)

    # -- incoming state ----------------------------------------------------------------------

    def start(self) -> None:
        self.feed.start()

    async def close(self) -> None:
        await self.feed.stop()
        for task in list(self._tasks):
            task.cancel()
        await self.client.aclose()

    def apply_status(self, status: Status) -> None:
        self.status = status
        self.read_only = bool(getattr(self.client, "read_only", False))
        if self.problem is not None:
            self.problem = None
            self.problem_changed.emit(None)
        server = server_key(status.server_url)
        if server != self._server:
            self._server = server
            self.spawn(self._load_token(server))
        self.status_changed.emit(status)

    def apply_problem(self, problem: Problem) -> None:
        changed = self.problem != problem or self.status is not None
        self.problem, self.status = problem, None
        if changed:
            self.problem_changed.emit(problem)
            self.status_changed.emit(None)

    def apply_job(self, job: Job) -> None:
        self._job_seq += 1
        self._job_seen[job.id] = self._job_seq
        self.jobs[job.id] = job
        self.job_changed.emit(job)

    @property
    def state(self) -> str | None:
        return self.status.state if self.status else None

    @property
    def needs_first_run(self) -> bool:
        """NeedsLogin and no server known: the wizard's moment."""
        return (
            self.status is not None
            and self.status.state == "NeedsLogin"
            and not self.status.server_url
        )

    # -- running actions ---------------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)  # a task without a reference may be collected mid-flight
        task.add_done_callback(self._tasks.discard)
        return task

    def _set_busy(self, busy: bool) -> None:
        if busy != self.busy:
            self.busy = busy
            self.busy_changed.emit(busy)

    def act(self, call: Callable[[], Awaitable[Status | None]]) -> asyncio.Task[Any]:
        """Runs a backend call that answers a Status; failures become `failed`."""

        async def run() -> None:
            try:
                status = await call()
                if status is not None:
                    self.apply_status(status)
            except Exception as e:  # noqa: BLE001 - shown to the user, never raised into Qt
                log.info("action failed: %s", e)
                self.failed.emit(classify(e))
            finally:
                self._set_busy(False)

        # Busy at once, not when the task first runs: the menu greys out before a second click.
        self._set_busy(True)
        return self.spawn(run())

    def connect_vpn(self) -> asyncio.Task[Any]:
        return self.act(self.client.up)

    def disconnect_vpn(self) -> asyncio.Task[Any]:
        return self.act(self.client.down)

    def logout(self) -> asyncio.Task[Any]:
        async def call() -> Status:
            status = await self.client.logout()
            if self._server:
                await asyncio.to_thread(self.tokens.clear, self._server)
            self._set_token(None, False)
            return status

        return self.act(call)

    async def login(self, form: LoginForm) -> Problem | None:
        """Logs the device in; with a password also signs the user in for admin pages."""
        link = normalise_link(form.server_url)
        self._set_busy(True)
        try:
            status = await self.client.login(
                link, auth_key=form.auth_key, username=form.username, password=form.password
            )
            self.apply_status(status)
            if form.username and form.password:
                await self.sign_in(form.username, form.password)
        except Exception as e:  # noqa: BLE001 - the dialog names it
            return classify(e)
        finally:
            self._set_busy(False)
        return None

    async def sign_in(self, username: str, password: str) -> Problem | None:
        """Gets a user token through the backend and files it in the keyring."""
        try:
            token = await self.admin.sign_in(username, password)
        except (CoordError, BackendError) as e:
            # The device is logged in either way; only the admin pages lack a token.
            log.warning("no user token (admin pages unavailable): %s", e)
            return classify(e)
        await self.remember_token(token)
        return None

    async def remember_token(self, token: str) -> None:
        server = self._server or server_key(self.status.server_url if self.status else None)
        if server:
            await asyncio.to_thread(self.tokens.save, server, token)
        await self._check_admin(token)

    async def _load_token(self, server: str | None) -> None:
        token = await asyncio.to_thread(self.tokens.load, server) if server else None
        if token is None:
            self._set_token(None, False)
            return
        await self._check_admin(token)

    async def _check_admin(self, token: str) -> None:
        try:
            admin = await self.admin.is_admin(token)
        except Exception as e:  # noqa: BLE001 - unknown means "not shown", never a crash
            log.info("cannot tell whether the user is an admin: %s", e)
            admin = False
        self._set_token(token, admin)

    def _set_token(self, token: str | None, admin: bool) -> None:
        self.token = token
        if admin != self.is_admin:
            self.is_admin = admin
            self.admin_changed.emit(admin)

    async def start_job(self, start: Callable[[], Awaitable[str]]) -> str:
        """Starts a job; its current state is fetched once, later ones come as events.

        The fetched copy is shown only if no event for the job arrived meanwhile: an event
        handled before the fetch's answer may be newer than it (a resumed job that finished
        fast), and showing the older copy last would leave the job looking unfinished."""
        asked = self._job_seq
        job_id = await start()
        try:
            job = await self.admin.job(job_id)
        except Exception as e:  # noqa: BLE001 - events will bring it anyway
            log.debug("job %s not readable yet: %s", job_id, e)
            return job_id
        if self._job_seen.get(job_id, 0) <= asked:
            self.apply_job(job)
        return job_id

    # -- small helpers -----------------------------------------------------------------------

    def copy(self, text: str, what: str) -> None:
        QGuiApplication.clipboard().setText(text)
        self.notice.emit("Copied", f"{what} {text} copied to the clipboard")
