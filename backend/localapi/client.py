"""LocalClient: the one way the CLI and the GUI talk to the backend (over its Unix socket).

The backend listens on two sockets (DESIGN section 3): the main one, 0660 root:pcloud, and a
read-only one beside it (`<socket>.ro`, 0666). A caller outside the group gets EACCES from the
main socket; the client then falls back to the `.ro` socket once and stays there, so reads work
for everyone and writes come back as the backend's 403 naming the fix. `read_only` tells a UI
that it is on the fallback (and should grey out its buttons).

Exceptions (catch the base to handle them all):

    LocalAPIError
    ├── BackendNotRunning   no socket, or nobody listening on it
    ├── PermissionDenied    403, or the socket itself is not ours to open
    └── BackendError        any other error answer; `.code` and `.message` from the backend
"""

from __future__ import annotations

import errno
import json
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from pcloud.backend.localapi.schemas import (
    CoordAnswer,
    FilterDetail,
    Job,
    JobEvent,
    JobStarted,
    Status,
    StatusEvent,
)

DEFAULT_SOCKET = Path("/run/pcloud/backend.sock")
READONLY_SUFFIX = ".ro"


def readonly_socket_path(socket_path: str | Path) -> Path:
    """Where the backend's read-only socket is for a main socket at `socket_path`."""
    return Path(f"{socket_path}{READONLY_SUFFIX}")


class LocalAPIError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BackendNotRunning(LocalAPIError):
    pass


class PermissionDenied(LocalAPIError):
    def __init__(self, message: str, code: str = "forbidden") -> None:
        super().__init__(message)
        self.code = code


class BackendError(LocalAPIError):
    def __init__(self, message: str, code: str = "error", status: int = 0) -> None:
        super().__init__(message)
        self.code, self.status = code, status


def _os_error(exc: BaseException) -> OSError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _denied(exc: BaseException) -> bool:
    os_err = _os_error(exc)
    return os_err is not None and os_err.errno in (errno.EACCES, errno.EPERM)


class LocalClient:
    def __init__(
        self,
        socket_path: str | Path = DEFAULT_SOCKET,
        *,
        timeout: float = 60.0,
        readonly_fallback: bool = True,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.readonly_path = readonly_socket_path(self.socket_path)
        self._timeout = timeout
        self._fallback_allowed = readonly_fallback
        self._http = self._make_http(self.socket_path)
        self._ro_http: httpx.AsyncClient | None = None

    def _make_http(self, path: Path) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(path)),
            base_url="http://pcloud",
            timeout=self._timeout,
        )

    @property
    def read_only(self) -> bool:
        """True once the main socket refused us and we talk over the read-only one."""
        return self._ro_http is not None

    async def __aenter__(self) -> LocalClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._ro_http is not None:
            await self._ro_http.aclose()

    def _current(self) -> httpx.AsyncClient:
        return self._ro_http or self._http

    def _fall_back(self, exc: httpx.TransportError) -> bool:
        """Switch to the read-only socket if `exc` is the main socket refusing to let us
        connect. EACCES comes from connect(), before any byte is sent, so the request that
        failed is safe to send again, even a POST."""
        if self._ro_http is not None or not self._fallback_allowed or not _denied(exc):
            return False
        self._ro_http = self._make_http(self.readonly_path)
        return True

    def _transport_error(self, exc: httpx.TransportError) -> LocalAPIError:
        if _denied(exc):
            return PermissionDenied(f"no permission to open {self.socket_path}")
        if self.read_only:
            # The main socket refused us and nothing answers on `.ro`: either the backend runs
            # without it (--no-readonly-socket) or it is not running and left its socket file.
            # Permission is the part the user can fix without root's help being a surprise.
            return PermissionDenied(
                f"no permission to open {self.socket_path}, and nothing answers on the "
                f"read-only {self.readonly_path} (is the backend running?)"
            )
        return BackendNotRunning(f"the backend is not running (no answer on {self.socket_path})")

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        while True:
            try:
                answer = await self._current().request(method, path, json=body)
                break
            except httpx.TransportError as e:
                if not self._fall_back(e):
                    raise self._transport_error(e) from None
        if answer.status_code >= 400:
            raise _answer_error(answer.status_code, answer.content)
        return answer.json()

    async def status(self) -> Status:
        return Status.model_validate(await self._request("GET", "/v1/status"))

    async def packet_filter(self) -> FilterDetail:
        return FilterDetail.model_validate(await self._request("GET", "/v1/filter"))

    async def login(
        self,
        server_url: str,
        *,
        auth_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> Status:
        body = {
            "server_url": server_url,
            "auth_key": auth_key,
            "username": username,
            "password": password,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return Status.model_validate(await self._request("POST", "/v1/login", body))

    async def up(self) -> Status:
        return Status.model_validate(await self._request("POST", "/v1/up"))

    async def down(self) -> Status:
        return Status.model_validate(await self._request("POST", "/v1/down"))

    async def logout(self) -> Status:
        return Status.model_validate(await self._request("POST", "/v1/logout"))

    async def rotate_key(self) -> Status:
        return Status.model_validate(await self._request("POST", "/v1/rotate-key"))

    async def install_server(
        self,
        *,
        network: str | None = None,
        listen: str | None = None,
        k3s_binary: str | None = None,
        admin_username: str | None = None,
        admin_password: str | None = None,
        public_url: str | None = None,
    ) -> str:
        """Start (or resume) the install-server job; its id."""
        body = {
            "network": network,
            "listen": listen,
            "k3s_binary": k3s_binary,
            "public_url": public_url,
            "admin_username": admin_username,
            "admin_password": admin_password,
        }
        body = {k: v for k, v in body.items() if v is not None}
        answer = await self._request("POST", "/v1/install-server", body)
        return JobStarted.model_validate(answer).job_id

    async def join_server(
        self,
        *,
        auth_key: str | None = None,
        token: str | None = None,
        k3s_binary: str | None = None,
    ) -> str:
        """Start (or resume) the join-server job; its id."""
        body = {"auth_key": auth_key, "token": token, "k3s_binary": k3s_binary}
        body = {k: v for k, v in body.items() if v is not None}
        answer = await self._request("POST", "/v1/join-server", body)
        return JobStarted.model_validate(answer).job_id

    async def _job(self, path: str, body: dict[str, Any] | None = None) -> str:
        return JobStarted.model_validate(await self._request("POST", path, body or {})).job_id

    async def ha_enable(self) -> str:
        """Start (or resume) the ha-enable job on this (the first) server; its id."""
        return await self._job("/v1/ha-enable")

    async def ha_join(self, *, listen: str | None = None) -> str:
        """Start (or resume) the ha-join job on this server; its id."""
        return await self._job("/v1/ha-join", {"listen": listen} if listen else {})

    async def ha_force_new_cluster(self, confirm: str) -> str:
        return await self._job("/v1/ha-force-new-cluster", {"confirm": confirm})

    async def remove_server(self, *, demote: bool = False) -> str:
        """Start (or resume) the remove-server job; its id."""
        return await self._job("/v1/remove-server", {"demote": demote})

    async def coord(
        self, method: str, path: str, *, body: Any = None, token: str | None = None
    ) -> CoordAnswer:
        """Relay one admin call to the coordination server; its status and body as they
        came (an error answer of the server is not an exception here)."""
        request: dict[str, Any] = {"method": method, "path": path}
        if body is not None:
            request["body"] = body
        if token is not None:
            request["token"] = token
        return CoordAnswer.model_validate(await self._request("POST", "/v1/coord", request))

    async def job(self, job_id: str) -> Job:
        return Job.model_validate(await self._request("GET", f"/v1/jobs/{job_id}"))

    async def raw_status(self) -> dict[str, Any]:
        """The status exactly as the backend sent it (for `--json`)."""
        data: dict[str, Any] = await self._request("GET", "/v1/status")
        return data

    async def events(self) -> AsyncGenerator[StatusEvent | JobEvent, None]:
        """Server-sent events, parsed: the current status first, then every change."""
        while True:
            try:
                async with self._current().stream("GET", "/v1/events", timeout=None) as answer:
                    if answer.status_code >= 400:
                        raise _answer_error(answer.status_code, await answer.aread())
                    async for event in _parse_sse(answer):
                        yield event
                return
            except httpx.TransportError as e:
                # Only a refused connect() falls back, and that happens before the first event.
                if not self._fall_back(e):
                    raise self._transport_error(e) from None


async def _parse_sse(answer: httpx.Response) -> AsyncIterator[StatusEvent | JobEvent]:
    kind, data = "", []
    async for line in answer.aiter_lines():
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            payload = json.loads("\n".join(data))
            if kind == "status":
                yield StatusEvent(status=Status.model_validate(payload))
            elif kind == "job":
                yield JobEvent(job=Job.model_validate(payload))
            kind, data = "", []


def _answer_error(status: int, content: bytes) -> LocalAPIError:
    try:
        detail = json.loads(content)["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "error", content.decode(errors="replace")[:200] or f"HTTP {status}"
    if status == 403:
        return PermissionDenied(message, code)
    return BackendError(message, code, status)
