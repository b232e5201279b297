"""LocalClient: the one way the CLI and the GUI talk to the backend (over its Unix socket).

Exceptions (catch the base to handle them all):

    LocalAPIError
    ├── BackendNotRunning   no socket, or nobody listening on it
    ├── PermissionDenied    403, or the socket itself is not ours to open
    └── BackendError        any other error answer; `.code` and `.message` from the backend
"""

from __future__ import annotations

import errno
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from pcloud.backend.localapi.schemas import Job, JobEvent, Status, StatusEvent

DEFAULT_SOCKET = Path("/run/pcloud/backend.sock")


class LocalAPIError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BackendNotRunning(LocalAPIError):
    pass


class PermissionDenied(LocalAPIError):
    pass


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


class LocalClient:
    def __init__(self, socket_path: str | Path = DEFAULT_SOCKET, *, timeout: float = 60.0) -> None:
        self.socket_path = Path(socket_path)
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(self.socket_path)),
            base_url="http://pcloud",
            timeout=timeout,
        )

    async def __aenter__(self) -> LocalClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _transport_error(self, exc: httpx.TransportError) -> LocalAPIError:
        os_err = _os_error(exc)
        if os_err is not None and os_err.errno in (errno.EACCES, errno.EPERM):
            return PermissionDenied(f"no permission to open {self.socket_path}")
        return BackendNotRunning(f"the backend is not running (no answer on {self.socket_path})")

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            answer = await self._http.request(method, path, json=body)
        except httpx.TransportError as e:
            raise self._transport_error(e) from None
        if answer.status_code >= 400:
            raise _answer_error(answer.status_code, answer.content)
        return answer.json()

    async def status(self) -> Status:
        return Status.model_validate(await self._request("GET", "/v1/status"))

    async def login(
        self,
        server_url: str,
        *,
        auth_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> Status:
        body = {"server_url": server_url, "auth_key": auth_key, "username": username,
                "password": password}
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

    async def job(self, job_id: str) -> Job:
        return Job.model_validate(await self._request("GET", f"/v1/jobs/{job_id}"))

    async def raw_status(self) -> dict[str, Any]:
        """The status exactly as the backend sent it (for `--json`)."""
        data: dict[str, Any] = await self._request("GET", "/v1/status")
        return data

    async def events(self) -> AsyncIterator[StatusEvent | JobEvent]:
        """Server-sent events, parsed: the current status first, then every change."""
        try:
            async with self._http.stream("GET", "/v1/events", timeout=None) as answer:
                if answer.status_code >= 400:
                    raise _answer_error(answer.status_code, await answer.aread())
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
        except httpx.TransportError as e:
            raise self._transport_error(e) from None


def _answer_error(status: int, content: bytes) -> LocalAPIError:
    try:
        detail = json.loads(content)["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "error", content.decode(errors="replace")[:200] or f"HTTP {status}"
    if status == 403:
        return PermissionDenied(message)
    return BackendError(message, code, status)
