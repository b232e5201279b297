"""Property-based fuzzing of every coordination route from its OpenAPI schema: never a 5xx.

Runs the real app in-process (ASGI) over a real SQLite state dir, as an admin so that the
generated requests get past authentication and reach the handlers' validation and logic. Each
case also carries generated headers (`fuzz_headers.HEADERS`: a bearer of any shape, forwarding
headers, content types, odd names and values). What arrives below HTTP (header bytes, counts,
sizes, framing) is fuzzed against a real server process in test_server_transport_limits.py.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from starlette.testclient import TestClient

from pcloud.server.accounts import Accounts
from pcloud.server.app import create_app
from pcloud.server.config import Listen, Settings
from tests.integration.fuzz_headers import HEADERS

# Schemathesis collects operations at import time, so the app (over a throwaway state dir that
# the module removes at the end) is built at import too.
_STATE = Path(tempfile.mkdtemp(prefix="pcloud-fuzz-"))
APP = create_app(Settings(state_dir=_STATE / "server", listen=(Listen("127.0.0.1", 8443),)))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def app_and_token() -> Iterator[tuple[object, str]]:
    with TestClient(APP) as client:
        code = Accounts(APP.state.pcloud).ensure_setup_code()
        r = client.post(
            "/api/v1/setup",
            json={"setup_code": code, "username": "admin", "password": "correct horse"},
        )
        assert r.status_code == 200, r.text
        yield APP, r.json()["token"]
    shutil.rmtree(_STATE, ignore_errors=True)


@schema.parametrize()
@schema.given(extra=HEADERS)
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(
    case: schemathesis.Case, extra: dict[str, str], app_and_token: tuple[object, str]
) -> None:
    _, token = app_and_token
    headers = {**extra, **dict(case.headers or {})}
    headers.setdefault("Authorization", f"Bearer {token}")
    response = case.call(headers=headers)
    assert response.status_code < 500, f"{case.method} {case.path}: {response.text[:300]}"
    content_type = " ".join(response.headers.get("content-type", []))
    if response.status_code >= 400 and "application/json" in content_type:
        body = response.json()
        assert "error" in body and {"code", "message"} <= set(body["error"]), body
