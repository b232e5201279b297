"""The backend's one client of the coordination server (DESIGN section 2), on a pinned TLS
context: the typed calls of the device's own life (login, register, netmap, endpoints, keys),
and `call`/`request` for any other route (the jobs, the local API's relay).

Errors (`control/errors.py`): `ControlError` carries the server's `{"error": {code, message}}`
and the HTTP status; `ControlUnreachable` means no answer at all (connect refused, TLS failure,
timeout), which the poller treats as "try the next server later". Tokens travel only in the
Authorization header and are never logged.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from pcloud.backend.control.errors import ControlError, ControlUnreachable, error_of
from pcloud.backend.control.pinning import pinned_context
from pcloud.backend.control.proof import make_proof
from pcloud.backend.control.reach import describe
from pcloud.backend.keys import PrivateKey
from pcloud.server.protocol import (
    EndpointsUpdate,
    LoginRequest,
    Netmap,
    ProofPurpose,
    RegisterAnswer,
    RegisterRequest,
    RenewAnswer,
    RenewRequest,
    RotateKeyAnswer,
    RotateKeyRequest,
    ServerKey,
    TokenAnswer,
)

API = "/api/v1"
M = TypeVar("M", bound=BaseModel)
EventHooks = Mapping[str, list[Callable[..., Awaitable[Any]]]]

__all__ = ["ControlClient", "ControlError", "ControlUnreachable", "EventHooks", "call"]


class ControlClient:
    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        *,
        event_hooks: EventHooks | None = None,
        timeout: float = 15.0,
    ) -> None:
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            verify=ssl_context,
            timeout=timeout,
            event_hooks={k: list(v) for k, v in (event_hooks or {}).items()},
        )

    @classmethod
    def pinned(cls, ca_pem: str, *, timeout: float = 15.0) -> ControlClient:
        """A client that trusts only the network CA `ca_pem`."""
        return cls(pinned_context(ca_pem), timeout=timeout)

    @property
    def http(self) -> httpx.AsyncClient:
        """The pinned HTTP client, for requests that stream (control.stream)."""
        return self._http

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _send(
        self,
        method: str,
        server: str,
        path: str,
        *,
        token: str | None,
        content: bytes | str | None,
        params: Mapping[str, Any] | None = None,
        wait_s: float | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            return await self._http.request(
                method,
                f"{server}{API}{path}",
                headers=headers,
                content=content,
                params=params,
                timeout=wait_s or self._timeout,
            )
        except httpx.HTTPError as e:
            raise ControlUnreachable(describe(e, server)) from None

    async def request(
        self, method: str, server: str, path: str, *, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        """Any route: (status, JSON body or None), error answers as values (the local API's
        relay hands the server's own answer on). ControlUnreachable if no answer."""
        content = None if body is None else json.dumps(body)
        answer = await self._send(method, server, path, token=token, content=content)
        if not answer.content:
            return answer.status_code, None
        try:
            return answer.status_code, answer.json()
        except ValueError:
            err = error_of(answer.status_code, answer.content, answer.reason_phrase)
            return answer.status_code, {"error": {"code": err.code, "message": err.message}}

    async def call(
        self, method: str, server: str, path: str, *, token: str | None = None, body: Any = None
    ) -> Any:
        """Any route: its JSON body (None if empty); ControlError on any error answer (5xx
        included: a job's caller decides whether another server is worth asking)."""
        content = None if body is None else json.dumps(body)
        answer = await self._send(method, server, path, token=token, content=content)
        if answer.status_code >= 400:
            raise error_of(answer.status_code, answer.content, answer.reason_phrase)
        if not answer.content:
            return None
        try:
            return answer.json()
        except ValueError:
            raise ControlUnreachable(f"{server}: the answer to {path} is not JSON") from None

    async def _call(
        self,
        method: str,
        server: str,
        path: str,
        *,
        token: str | None = None,
        body: BaseModel | None = None,
        params: Mapping[str, Any] | None = None,
        wait_s: float | None = None,
        model: type[M] | None = None,
    ) -> M | None:
        content = body.model_dump_json(exclude_none=True) if body is not None else None
        answer = await self._send(
            method, server, path, token=token, content=content, params=params, wait_s=wait_s
        )
        if answer.status_code >= 400:
            raise _error(answer, server)
        if model is None:
            return None
        try:
            return model.model_validate_json(answer.content)
        except ValidationError as e:
            raise ControlUnreachable(f"{server}: unexpected answer to {path}: {e}") from None

    async def login(self, server: str, username: str, password: str) -> TokenAnswer:
        body = LoginRequest(username=username, password=password)
        answer = await self._call("POST", server, "/login", body=body, model=TokenAnswer)
        assert answer is not None
        return answer

    async def proof(self, server: str, key: PrivateKey, purpose: ProofPurpose) -> str:
        """A fresh proof of `key` for `purpose`, sealed to `server`'s own proof key."""
        answer = await self._call("GET", server, "/key", model=ServerKey)
        assert answer is not None
        return make_proof(key, answer, purpose)

    async def renew(self, server: str, token: str, key: PrivateKey) -> RenewAnswer:
        """Extend our node token's life (even once expired) with a proof of our key."""
        body = RenewRequest(proof=await self.proof(server, key, "renew"))
        answer = await self._call(
            "POST", server, "/nodes/self/token", token=token, body=body, model=RenewAnswer
        )
        assert answer is not None
        return answer

    async def register(self, server: str, bearer: str, request: RegisterRequest) -> RegisterAnswer:
        answer = await self._call(
            "POST", server, "/nodes/register", token=bearer, body=request, model=RegisterAnswer
        )
        assert answer is not None
        return answer

    async def netmap(self, server: str, token: str, since: int | None, poll_s: int) -> Netmap:
        """Long poll: the server answers at once on a change, else after `poll_s` seconds."""
        params: dict[str, Any] = {"timeout": poll_s}
        if since is not None:
            params["since"] = since
        answer = await self._call(
            "GET",
            server,
            "/netmap",
            token=token,
            params=params,
            wait_s=poll_s + self._timeout,
            model=Netmap,
        )
        assert answer is not None
        return answer

    async def health(self, server: str, wait_s: float) -> None:
        """`GET /health` with a short timeout: is the server answering at all?"""
        await self._call("GET", server, "/health", wait_s=wait_s)

    async def put_endpoints(self, server: str, token: str, endpoints: Sequence[str]) -> None:
        body = EndpointsUpdate(endpoints=list(endpoints))
        await self._call("PUT", server, "/nodes/self/endpoints", token=token, body=body)

    async def rotate_key(self, server: str, token: str, new_key: PrivateKey) -> RotateKeyAnswer:
        """Move our node to `new_key`, proving we hold it."""
        body = RotateKeyRequest(
            public_key=new_key.public_key(), proof=await self.proof(server, new_key, "rotate")
        )
        answer = await self._call(
            "POST",
            server,
            "/nodes/self/rotate-key",
            token=token,
            body=body,
            model=RotateKeyAnswer,
        )
        assert answer is not None
        return answer

    async def delete_self(self, server: str, token: str) -> None:
        await self._call("DELETE", server, "/nodes/self", token=token)


def _error(answer: httpx.Response, server: str) -> Exception:
    err = error_of(answer.status_code, answer.content, answer.reason_phrase)
    if err.status >= 500:
        # A server in trouble is, for us, a server not answering: retry, maybe elsewhere.
        return ControlUnreachable(f"{server}: {err}")
    return err


async def call(
    ca_pem: str,
    server: str,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    timeout: float = 30.0,
) -> Any:
    """One `METHOD server/api/v1/path` on a short-lived pinned client (the jobs' calls, which
    may outlive a login): its JSON body; ControlError / ControlUnreachable as `ControlClient`."""
    async with ControlClient.pinned(ca_pem, timeout=timeout) as client:
        return await client.call(method, server, path, token=token, body=body)
