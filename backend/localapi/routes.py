"""The local API's routes (DESIGN section 3) as a FastAPI app over a `LocalBackend`.

Who may do what is decided in one middleware, before any route runs:
- requests shaped like a browser's (an Origin or Referer header) are refused, so a web page
  cannot drive the backend through a local proxy;
- a request with more than `MAX_HEADERS` header lines is answered 431 (the protocol bounds the
  head's bytes; security review, finding 4);
- every method other than GET/HEAD is a write and needs `may_write(caller)`: root, the
  backend's own uid, or a member of the `pcloud` group. Checking by method rather than per route
  means a route added later cannot forget it. The caller comes from SO_PEERCRED
  (`server.PeerCredProtocol`, `request.state.caller`), on either of the two sockets: the rule
  does not depend on which one the caller came through.
- only root (or the backend's own uid) may name the `k3s_binary` that install-server and
  join-server install and run as root: the group would otherwise be root-equivalent (finding 10).
Event streams are capped per uid (`MAX_STREAMS_PER_UID`, root exempt): each one costs a status
refresh every few seconds.
Errors are `{"error": {code, message}}` like the server's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from pcloud.backend.errors import OperationError
from pcloud.backend.jobs import ha_enable, install_server, join_server, remove_server
from pcloud.backend.local import LocalBackend
from pcloud.backend.localapi.peercred import ANONYMOUS, Caller, may_write
from pcloud.backend.localapi.schemas import (
    CoordAnswer,
    CoordRequest,
    FilterDetail,
    ForceNewClusterRequest,
    HaJoinRequest,
    InstallServerRequest,
    Job,
    JobStarted,
    JoinServerRequest,
    LoginRequest,
    RemoveServerRequest,
    Status,
)
from pcloud.backend.status import filter_status

log = logging.getLogger(__name__)

STATUS_REFRESH_S = 5.0  # how often an idle event stream re-checks the byte counters
READ_METHODS = frozenset({"GET", "HEAD"})
# Job result fields only callers who may change things see (the read-only socket is 0666).
SECRET_RESULT_KEYS = ("setup_code",)
MAX_HEADERS = 100
MAX_STREAMS_PER_UID = 8
BINARY_RULE = (
    "only root may choose the K3s binary (k3s_binary): it is installed and run as root. "
    "Leave it out to use the pinned K3s release (downloaded and SHA-256 verified) or the "
    "backend's own k3s_binary setting"
)


class JobRegistry(Protocol):
    """What the jobs module offers the local API (jobs themselves live in `backend/jobs`)."""

    def get(self, job_id: str) -> Job | dict[str, Any] | None: ...


def _redacted(job: Job | dict[str, Any]) -> dict[str, Any]:
    data = job.model_dump() if isinstance(job, Job) else dict(job)
    result = data.get("result")
    if isinstance(result, dict) and any(k in result for k in SECRET_RESULT_KEYS):
        data["result"] = {k: v for k, v in result.items() if k not in SECRET_RESULT_KEYS}
    return data


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def create_app(
    backend: LocalBackend,
    *,
    jobs: JobRegistry | None = None,
    admin_gid: int | None = None,
    backend_uid: int = 0,
) -> FastAPI:
    app = FastAPI(title="pcloud-backend local API", docs_url=None, redoc_url=None, openapi_url=None)
    registry: JobRegistry = jobs if jobs is not None else backend.jobs

    def trusted(request: Request) -> bool:
        """May this caller see secrets in job results (the rule that lets it write)?"""
        who: Caller = getattr(request.state, "caller", ANONYMOUS)
        return may_write(who, backend_uid=backend_uid, admin_gid=admin_gid)[0]

    streams: dict[int, int] = {}  # open event streams per uid

    def caller_of(request: Request) -> Caller:
        who: Caller = getattr(request.state, "caller", ANONYMOUS)
        return who

    def only_root_names_binaries(request: Request, binary: str | None) -> None:
        who = caller_of(request)
        if binary is not None and who.uid != 0 and not (who.uid == backend_uid >= 0):
            log.info("refused k3s_binary from uid %d pid %d", who.uid, who.pid)
            raise OperationError(BINARY_RULE, code="forbidden", http_status=403)

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if len(request.headers.raw) > MAX_HEADERS:
            return _error(
                431, "header_too_large", f"the request has more than {MAX_HEADERS} headers"
            )
        for header in ("origin", "referer"):
            if header in request.headers:
                return _error(
                    403,
                    "browser_refused",
                    f"requests carrying a browser's {header.title()} header are "
                    "refused: the local API is not for web pages",
                )
        if request.method not in READ_METHODS:
            who: Caller = getattr(request.state, "caller", ANONYMOUS)
            ok, reason = may_write(who, backend_uid=backend_uid, admin_gid=admin_gid)
            if not ok:
                log.info(
                    "refused %s %s from uid %d pid %d on %s: %s",
                    request.method,
                    request.url.path,
                    who.uid,
                    who.pid,
                    getattr(request.state, "local_socket", "?"),
                    reason,
                )
                return _error(403, "forbidden", f"permission denied: {reason}")
        return await call_next(request)

    @app.exception_handler(OperationError)
    async def operation_error(_: Request, exc: OperationError) -> JSONResponse:
        return _error(exc.http_status, exc.code, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = {403: "forbidden", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "error"
        )
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return _error(422, "invalid_request", "; ".join(parts))

    @app.get("/v1/status", response_model=Status)
    async def get_status() -> Status:
        return await backend.status()

    @app.get("/v1/filter", response_model=FilterDetail)
    async def get_filter() -> FilterDetail:
        return filter_status(backend.filter, detail=True)

    @app.post("/v1/login", response_model=Status)
    async def login(body: LoginRequest) -> Status:
        await backend.login(body)
        return await backend.status()

    @app.post("/v1/up", response_model=Status)
    async def up() -> Status:
        await backend.up()
        return await backend.status()

    @app.post("/v1/down", response_model=Status)
    async def down() -> Status:
        await backend.down()
        return await backend.status()

    @app.post("/v1/logout", response_model=Status)
    async def logout() -> Status:
        await backend.logout()
        return await backend.status()

    @app.post("/v1/rotate-key", response_model=Status)
    async def rotate_key() -> Status:
        await backend.rotate_key()
        return await backend.status()

    @app.post("/v1/install-server", response_model=JobStarted)
    async def post_install_server(body: InstallServerRequest, request: Request) -> JobStarted:
        only_root_names_binaries(request, body.k3s_binary)
        credentials = None
        if body.admin_username and body.admin_password:
            credentials = (body.admin_username, body.admin_password)
        params = {
            "network": body.network,
            "listen": body.listen,
            "k3s_binary": body.k3s_binary,
            "public_url": body.public_url,
        }
        return JobStarted(job_id=install_server.start(backend, params, credentials))

    @app.post("/v1/join-server", response_model=JobStarted)
    async def post_join_server(body: JoinServerRequest, request: Request) -> JobStarted:
        only_root_names_binaries(request, body.k3s_binary)
        approval = {"auth_key": body.auth_key or "", "token": body.token or ""}
        job_id = join_server.start(backend, {"k3s_binary": body.k3s_binary}, approval)
        return JobStarted(job_id=job_id)

    @app.post("/v1/ha-enable", response_model=JobStarted)
    async def post_ha_enable() -> JobStarted:
        return JobStarted(job_id=ha_enable.start(backend, ha_enable.ENABLE, {}))

    @app.post("/v1/ha-join", response_model=JobStarted)
    async def post_ha_join(body: HaJoinRequest) -> JobStarted:
        return JobStarted(job_id=ha_enable.start(backend, ha_enable.JOIN, {"listen": body.listen}))

    @app.post("/v1/ha-force-new-cluster", response_model=JobStarted)
    async def post_force(body: ForceNewClusterRequest) -> JobStarted:
        if body.confirm != ha_enable.CONFIRMATION:
            raise OperationError(
                "force-new-cluster rewrites our etcd membership to this server alone: confirm "
                f"with {ha_enable.CONFIRMATION!r} once the other servers are gone for good",
                code="not_confirmed",
                http_status=400,
            )
        params = {"confirm": body.confirm}
        return JobStarted(job_id=ha_enable.start(backend, ha_enable.FORCE, params))

    @app.post("/v1/remove-server", response_model=JobStarted)
    async def post_remove_server(body: RemoveServerRequest) -> JobStarted:
        return JobStarted(job_id=remove_server.start(backend, {"demote": body.demote}))

    @app.post("/v1/coord", response_model=CoordAnswer)
    async def post_coord(body: CoordRequest) -> CoordAnswer:
        status, answer = await backend.relay(
            body.method, body.path, body=body.body, token=body.token
        )
        return CoordAnswer(status=status, body=answer)

    @app.get("/v1/jobs/{job_id}", response_model=Job)
    async def get_job(job_id: str, request: Request) -> Any:
        try:
            job = registry.get(job_id)
        except Exception:  # a malformed id is simply not a job
            job = None
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job if trusted(request) else _redacted(job)

    @app.get("/v1/events")
    async def events(request: Request) -> Response:
        uid = caller_of(request).uid
        counted = uid not in (0, backend_uid)
        if counted and streams.get(uid, 0) >= MAX_STREAMS_PER_UID:
            log.info("refused an event stream to uid %d: it holds %d", uid, MAX_STREAMS_PER_UID)
            return _error(
                429,
                "too_many_streams",
                f"uid {uid} already follows {MAX_STREAMS_PER_UID} event streams; close one first",
            )
        if counted:
            streams[uid] = streams.get(uid, 0) + 1
        released = False

        def release() -> None:
            # Twice-safe: after the response (also when the client went away) and when the
            # generator is closed, whichever comes first.
            nonlocal released
            if counted and not released:
                released = True
                streams[uid] -= 1
                if not streams[uid]:
                    del streams[uid]

        return StreamingResponse(
            _counted(_event_stream(backend, secrets=trusted(request)), release),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store"},
            background=BackgroundTask(release),
        )

    return app


async def _counted(stream: AsyncIterator[str], done: Callable[[], None]) -> AsyncIterator[str]:
    """`stream`, calling `done` once it ends however it ends (client gone, server stopping)."""
    try:
        async for chunk in stream:
            yield chunk
    finally:
        done()


def sse(event: str, data: Any) -> str:
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"event: {event}\ndata: {payload}\n\n"


async def _event_stream(backend: LocalBackend, *, secrets: bool) -> AsyncIterator[str]:
    """`status` at once, then whenever it differs from the last one sent (state, netmap,
    counters); `job` events as they come."""
    async with backend.bus.subscribe() as queue:
        last = None
        while True:
            current = (await backend.status()).model_dump_json()
            if current != last:
                yield sse("status", current)
                last = current
            try:
                async with asyncio.timeout(STATUS_REFRESH_S):
                    event = await queue.get()
            except TimeoutError:
                continue
            if event.kind == "job":
                yield sse("job", event.data if secrets else _redacted(event.data))
