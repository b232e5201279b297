"""The admin page's "Add a device" tab against a REAL backend and a REAL coordination server: the
one-line install the server prints, pinned to the TLS key that server presents, shown with a QR
code of the same line, and the packages the server serves (or how to give it some)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import asyncio
import json
import re
import shutil
import ssl
from pathlib import Path

import segno

from pcloud.backend.control.pinning import spki_pin
from pcloud.backend.localapi.client import LocalClient
from pcloud.gui.secrets import TokenStore
from pcloud.gui.session import Session
from pcloud.gui.views.admin_page import AdminPage
from tests.integration.test_gui_backend import Backend, loop, until  # noqa: F401 - loop: fixture
from tests.support.coord import CoordServer

VERSION = "0.1.0"


def test_admin_page_shows_the_servers_install_line_with_a_qr_code(
    loop: asyncio.AbstractEventLoop,  # noqa: F811 - the fixture imported above
    coord: CoordServer,
    tmp_path: Path,
) -> None:
    coord.admin("users", "create", "alice", "--password-stdin", input="correct horse battery\n")
    key = json.loads(coord.admin("--json", "auth-keys", "create", "--user", "alice").stdout)["key"]
    printed = re.search(
        r"install line: (.+)", (coord.state_dir.parent / f"{coord.state_dir.name}.out").read_text()
    )
    assert printed, "pcloud-server printed no install line"
    presented = spki_pin(ssl.get_server_certificate((coord.host, coord.port)).encode())
    device = Backend(tmp_path, "gui-dev").start()
    session = Session(LocalClient(device.socket, timeout=30), TokenStore(use_system=False))
    page = AdminPage(session)
    tab = page.install

    async def scenario() -> None:
        await LocalClient(device.socket).login(coord.join_link, auth_key=key)
        page.refresh()  # no admin token: the install line is public, the lists wait
        await until(lambda: tab.info is not None, what="the install line")
        line = tab.line.text()
        assert line == printed.group(1).strip()
        assert f"--pinnedpubkey {presented} {coord.url}/install.sh " in line
        assert line.endswith("| sudo sh -s -- --auth-key pk_...")
        assert tab.qr.text == line
        assert tab.qr._matrix == [
            [bool(v) for v in row] for row in segno.make(line, error="m").matrix
        ]
        assert "no pcloud packages to serve yet" in tab.note.text()
        assert "Sign in as an admin first" in page.message.text()

        # The server's packages directory gets a package: Reload names it.
        packages = coord.state_dir / "packages"
        packages.mkdir()
        shutil.copyfile(__file__, packages / f"pcloud_{VERSION}_arm64.deb")
        tab.info = None
        tab.load()
        await until(lambda: tab.info is not None, what="the install line again")
        assert tab.note.text() == f"This server serves pcloud_{VERSION}_arm64.deb."

    try:
        loop.run_until_complete(asyncio.wait_for(scenario(), 60))
    finally:
        loop.run_until_complete(session.close())
        device.stop()
