"""Property-based fuzzing of the backend's local API from its OpenAPI schema: never a 5xx.

The real app over a real LocalBackend (fake WireGuard driver, throwaway state dir), in-process,
called as root so that requests get past the write rule and reach validation and the handlers;
every case also carries generated headers (fuzz_headers.HEADERS: browser headers are refused,
anything else must not break a route). Left out, because a valid request would act beyond this
test: `/v1/login` and `/v1/coord` (HTTPS to any server URL the fuzzer invents), the jobs that
install or remove servers, and `/v1/events` (a stream that never ends).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from pcloud.backend.config import BackendSettings
from pcloud.backend.local import LocalBackend
from pcloud.backend.localapi.peercred import Caller
from pcloud.backend.localapi.routes import create_app
from pcloud.backend.wg.fake import FakeDriver
from tests.integration.fuzz_headers import HEADERS

_STATE = Path(tempfile.mkdtemp(prefix="pcloud-localapi-fuzz-"))
_SETTINGS = BackendSettings(
    state_dir=_STATE / "state",
    socket=_STATE / "backend.sock",
    driver="fake",
    system_root=_STATE / "root",
)
BACKEND = LocalBackend(_SETTINGS, FakeDriver())
APP = create_app(BACKEND, admin_gid=None, backend_uid=0)
ROOT = Caller(pid=1, uid=0, gid=0, groups=frozenset())
OUT_OF_SCOPE = r"^/v1/(login|coord|events|install-server|join-server|ha-|remove-server)"


async def as_root(scope: Scope, receive: Receive, send: Send) -> None:
    """The app as the socket's protocol hands it a root caller (SO_PEERCRED); the backend
    starts and stops with the client, as `pcloud-backend` runs it around the server."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await BACKEND.start()
                await send({"type": "lifespan.startup.complete"})
            else:
                await BACKEND.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
    scope = {**scope, "state": {**scope.get("state", {}), "caller": ROOT}}
    await APP(scope, receive, send)


# The app serves no /openapi.json (the local API documents itself in DESIGN section 3); the
# schema comes from FastAPI directly.
schema = schemathesis.openapi.from_dict(APP.openapi())
schema = schema.exclude(path_regex=OUT_OF_SCOPE)
CLIENT = TestClient(as_root, base_url="http://pcloud")


def setup_module() -> None:
    CLIENT.__enter__()


def teardown_module() -> None:
    CLIENT.__exit__(None, None, None)
    shutil.rmtree(_STATE, ignore_errors=True)


@schema.parametrize()
@schema.given(extra=HEADERS)
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case, extra: dict[str, str]) -> None:
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url="http://pcloud")
    kwargs.pop("cookies", None)  # the local API reads none
    headers = {**extra, **(kwargs.pop("headers", None) or {})}
    response = CLIENT.request(headers=headers, **kwargs)
    assert response.status_code < 500, f"{case.method} {case.path}: {response.text[:300]}"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
