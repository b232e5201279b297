"""The backend keeps working across node-token expiry: it renews its token with a proof of its
WireGuard key before expiry (housekeeping), and once expired (the poll's 401 node_token_expired),
against a real `pcloud-server` with a 3 s node-token lifetime."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from pcloud.backend.local import LocalBackend
from pcloud.backend.localapi.schemas import LoginRequest
from pcloud.backend.state import State
from tests.integration.test_backend_control import (  # noqa: F401 - fixtures
    make_backend,
    peer_names,
    until,
)
from tests.support.coord import CoordServer, key_pair

TTL = 3


@pytest.fixture
def short_ttl(tmp_path: Path) -> Any:
    coord = CoordServer(tmp_path / "ttl", extra_args=["--node-token-ttl", str(TTL)]).start()
    yield coord
    coord.stop()


async def test_backend_renews_before_and_after_expiry(
    short_ttl: CoordServer,
    make_backend: Any,  # noqa: F811 - the fixture imported above
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    coord = short_ttl
    admin = coord.setup_admin()
    key = coord.auth_key(admin, reusable=True)
    b: LocalBackend = await make_backend("laptop")
    await b.login(LoginRequest(server_url=coord.join_link, auth_key=key))
    assert b.node is not None and b.node.renew_at is not None
    # 1. Before expiry: housekeeping renews at half the lifetime, and the deadline moves on.
    first = b.node.renew_at
    await until(lambda: b.node and (b.node.renew_at or 0) > first, "a renewal before expiry")
    # 2. After expiry: stop renewing early; the poll meets 401 node_token_expired, the backend
    # renews with its key proof and polls on (it does not log out).
    b.node.renew_at = time.time() + 3600
    caplog.clear()

    def renewed_after_401() -> bool:
        text = caplog.text
        refused = text.find("node token expired")
        return refused >= 0 and text.find("node token renewed", refused) > refused

    await until(renewed_after_401, "a 401 node_token_expired, then a renewal", timeout=TTL + 15)
    priv, pub = key_pair()
    with coord.client(key) as c:
        body = {"public_key": pub, "hostname": "phone", "proof": coord.proof(priv)}
        assert c.post("/api/v1/nodes/register", json=body).is_success
    await until(lambda: "phone" in peer_names(b), "the netmap after expiry", timeout=20)
    assert b.state is State.RUNNING and b.node is not None
    with coord.client(b.node.node_token) as c:
        assert c.get("/api/v1/netmap", params={"timeout": 0}).status_code == 200
