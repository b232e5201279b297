"""One-shot HTTPS calls to the coordination server (DESIGN section 2), on a pinned TLS context.

Errors: `ControlError` carries the server's `{"error": {code, message}}` and the HTTP status;
`ControlUnreachable` means no answer at all (connect refused, TLS failure, timeout), which the
poller treats as "try the next server later". Tokens travel only in the Authorization header and
are never logged.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

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


class ControlError(Exception):
    """The server answered with an error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status, self.code, self.message = status, code, message


class ControlUnreachable(Exception):
    """No usable answer from the server."""


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

    @property
    def http(self) -> httpx.AsyncClient:
        """The pinned HTTP client, for requests that stream (control.stream)."""
        return self._http

    async def aclose(self) -> None:
        await self._http.aclose()

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
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            answer = await self._http.request(
                method,
                f"{server}{API}{path}",
                headers=headers,
                content=body.model_dump_json(exclude_none=True) if body else None,
                params=params,
                timeout=wait_s or self._timeout,
            )
        except httpx.HTTPError as e:
            raise ControlUnreachable(describe(e, server)) from None
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
    try:
        detail = answer.json()["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", answer.text[:200] or answer.reason_phrase
    if answer.status_code >= 500:
        # A server in trouble is, for us, a server not answering: retry, maybe elsewhere.
        return ControlUnreachable(f"{server}: {message} ({code}, HTTP {answer.status_code})")
    return ControlError(answer.status_code, code, message)
