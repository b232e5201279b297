"""The in-process tier itself (tests.support.inproc): it prepares the state dir as `pcloud-server`
does, passes settings through, and leaves no thread behind when stopped.

Tier: in-process (this is the tier's own check).
"""

from __future__ import annotations

import asyncio
import hashlib
import stat
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.coord import key_pair
from tests.support.inproc import CoordApp, start_app


def test_prepared_as_the_server_prepares_its_state_dir(coord_app: CoordApp) -> None:
    pem = (coord_app.state_dir / "tls" / "ca.pem").read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert coord_app.fingerprint == hashlib.sha256(der).hexdigest()
    code = coord_app.state_dir / "setup-code"
    assert code.read_text().strip() == coord_app.setup_code
    assert stat.S_IMODE(code.stat().st_mode) == 0o600
    assert (coord_app.state_dir / "tls" / "server.key").exists()


def test_sync_and_async_clients_reach_one_app(coord_app: CoordApp) -> None:
    admin = coord_app.setup_admin()

    async def users() -> list[str]:
        async with coord_app.async_client(admin) as c:
            return [u["username"] for u in (await c.get("/api/v1/users")).json()]

    coord_app.create_user(admin, "alice")
    assert asyncio.run(users()) == ["admin", "alice"]


def test_settings_pass_through_and_stop_leaves_nothing_running(tmp_path: Path) -> None:
    before = {t.name for t in threading.enumerate()}
    app = start_app(tmp_path / "s", network="10.7.0.0/28", server_reserve=2)
    try:
        app.setup_admin()  # a password hash: a worker thread of the app's loop
        assert (app.settings.network, app.settings.server_reserve) == ("10.7.0.0/28", 2)
        assert app.settings.offline_grace_s == 0.5  # as the subprocess tier's servers
        with app.admin_client() as c:
            r = c.post(
                "/api/v1/cluster/first-server",
                json={"public_key": key_pair()[1], "hostname": "srv", "endpoints": []},
            )
        assert r.status_code == 200 and r.json()["address"] == "10.7.0.1", r.text
        assert "coord-app" in {t.name for t in threading.enumerate()}
    finally:
        app.stop()
    assert {t.name for t in threading.enumerate()} <= before
