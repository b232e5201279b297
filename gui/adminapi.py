"""The GUI's admin calls and jobs, over `LocalClient`'s public methods.

The GUI never talks to the coordination server itself (DESIGN section 1): admin pages reach it
through the backend, which already pins the network's CA. The local-API routes behind this:

    POST /v1/coord            {method, path, body?, token?}
                              -> 200 {status: int, body: any}  (the coordination answer as is)
                              409 not_logged_in / 502 server_unreachable / 400 path_not_allowed
    POST /v1/install-server   {network, listen}  -> {job_id}  (result: setup_code, join_link)
    POST /v1/join-server      {token?}           -> {job_id}
    GET  /v1/jobs/{id}        -> Job

Through `POST /v1/coord`: `GET /install` (public) is the server's one-line install for new
devices, shown on the admin page with a QR code.

A failed job is resumed by posting its start route again with the same body: every step is
idempotent (DESIGN section 5), so finished steps are skipped.
"""

from __future__ import annotations

from typing import Any, TypedDict

from pcloud.backend.localapi.client import LocalClient
from pcloud.backend.localapi.schemas import Job


class CoordError(Exception):
    """The coordination server refused a request (its `{"error": {code, message}}`)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class UserInfo(TypedDict):
    username: str
    admin: bool
    created_at: str


class NodeInfo(TypedDict, total=False):
    node_id: int
    hostname: str
    user: str
    role: str
    tags: list[str]
    address: str
    online: bool
    last_seen: str | None


class AuthKeyInfo(TypedDict, total=False):
    prefix: str
    user: str
    reusable: bool
    ephemeral: bool
    role: str
    expires_at: str
    used: bool


class CreatedKey(TypedDict):
    key: str
    prefix: str
    expires_at: str


class InstallInfo(TypedDict):
    line: str  # the one-line install, `pk_...` where the pre-auth key goes
    base_url: str
    pin: str
    join_link: str
    version: str
    packages: list[str]  # the .deb files the server serves


class AdminAPI:
    """Coordination calls relayed by the backend, and the backend's long-running jobs."""

    def __init__(self, client: LocalClient) -> None:
        self._client = client

    # -- coordination passthrough ------------------------------------------------------------

    async def coord(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        answer = await self._client.coord(method, path, body=body, token=token)
        status, payload = answer.status, answer.body
        if status >= 400:
            detail = payload.get("error", {}) if isinstance(payload, dict) else {}
            raise CoordError(
                status,
                str(detail.get("code", "error")),
                str(detail.get("message", f"HTTP {status}")),
            )
        return payload

    async def sign_in(self, username: str, password: str) -> str:
        """A user token for admin calls (the password goes to the server and is not kept)."""
        answer = await self.coord(
            "POST", "/login", body={"username": username, "password": password}
        )
        return str(answer["token"])

    async def setup(self, setup_code: str, username: str, password: str) -> str:
        """Creates the first admin with the installer's setup code; answers its token."""
        answer = await self.coord(
            "POST",
            "/setup",
            body={"setup_code": setup_code, "username": username, "password": password},
        )
        return str(answer["token"])

    async def is_admin(self, token: str) -> bool:
        try:
            await self.coord("GET", "/users", token=token)
        except CoordError as e:
            if e.status in (401, 403):
                return False
            raise
        return True

    async def users(self, token: str) -> list[UserInfo]:
        return list(await self.coord("GET", "/users", token=token))

    async def create_user(self, token: str, username: str, password: str, admin: bool) -> None:
        await self.coord(
            "POST",
            "/users",
            token=token,
            body={"username": username, "password": password, "admin": admin},
        )

    async def delete_user(self, token: str, username: str) -> None:
        await self.coord("DELETE", f"/users/{username}", token=token)

    async def nodes(self, token: str) -> list[NodeInfo]:
        return list(await self.coord("GET", "/nodes", token=token))

    async def update_node(self, token: str, node_id: int, **changes: Any) -> None:
        await self.coord("PATCH", f"/nodes/{node_id}", token=token, body=changes)

    async def delete_node(self, token: str, node_id: int) -> None:
        await self.coord("DELETE", f"/nodes/{node_id}", token=token)

    async def auth_keys(self, token: str) -> list[AuthKeyInfo]:
        return list(await self.coord("GET", "/auth-keys", token=token))

    async def create_auth_key(
        self, token: str, *, reusable: bool, expires_in_s: int, role: str
    ) -> CreatedKey:
        answer: CreatedKey = await self.coord(
            "POST",
            "/auth-keys",
            token=token,
            body={
                "reusable": reusable,
                "ephemeral": False,
                "expires_in_s": expires_in_s,
                "role": role,
                "tags": [],
            },
        )
        return answer

    async def delete_auth_key(self, token: str, prefix: str) -> None:
        await self.coord("DELETE", f"/auth-keys/{prefix}", token=token)

    async def install_info(self, token: str | None = None) -> InstallInfo:
        """The server's one-line install for new devices (public: the token is optional)."""
        answer = await self.coord("GET", "/install", token=token)
        if not isinstance(answer, dict) or not all(
            k in answer for k in InstallInfo.__required_keys__
        ):
            raise CoordError(502, "bad_answer", "the server's answer has no install line")
        info: InstallInfo = answer  # type: ignore[assignment]
        return info

    # -- jobs --------------------------------------------------------------------------------

    async def start_install_server(self, network: str, listen: str) -> str:
        return await self._client.install_server(network=network, listen=listen)

    async def start_join_server(self, token: str | None) -> str:
        return await self._client.join_server(token=token)

    async def job(self, job_id: str) -> Job:
        return await self._client.job(job_id)
