"""The GUI against REAL backends on lab hosts (network namespaces, real wireguard-go through
`--driver userspace`) and a real coordination server, driven from this test process through each
host's backend socket (`host.path("/run/pcloud/backend.sock")`), offscreen Qt.

1. Login and the tray: the login dialog names wrong fingerprint, wrong password, server
   unreachable and backend not running; a correct login reaches Running; Disconnect/Connect
   from the tray menu take the backend's WireGuard interface down and up again (seen from inside
   the host); a device that joins later appears in the peer table by events, without a click.
2. The first-run wizard's install path: the K3s stand-in fails its first start, the page names
   the failed step and offers Retry, Retry resumes the same job to the end, the account page
   creates the first admin with the setup code; the admin page then creates a pre-auth key with
   which a second host logs in (through the GUI's login dialog) and appears in the admin's
   device list and peer table.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported anywhere

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import qasync
from PySide6.QtWidgets import QApplication, QTableWidget, QWizard

from pcloud.backend.localapi.client import LocalClient
from pcloud.gui.app import PCloudApp
from pcloud.gui.dialogs.login import LoginDialog
from pcloud.gui.dialogs.wizard import ACCOUNT, DONE, NETWORK, PROGRESS
from pcloud.gui.secrets import TokenStore
from pcloud.gui.session import Session
from pcloud.gui.tray import Tray
from pcloud.gui.views.main_window import MainWindow
from tests.lab import Host, Lab
from tests.lab.mesh import Mesh
from tests.support.k3s_standin import exec_line

pytestmark = pytest.mark.lab
T = TypeVar("T")

SOCKET = "/run/pcloud/backend.sock"
PASSWORD = "admin-password"
ROOT = "/var/lib/pcloud/root"  # the host's private system root for K3s files
K3S = "/etc/pcloud/k3s"  # the stand-in, given to the backend as its --k3s-binary default
K3S_FAILED_ONCE = "/etc/pcloud/k3s-failed-once"


# -- harness -------------------------------------------------------------------------------------


@pytest.fixture
def loop(qapp: QApplication) -> Iterator[asyncio.AbstractEventLoop]:
    """One qasync loop per test: QTimers and asyncio tasks both run while a scenario awaits."""
    qapp.setQuitOnLastWindowClosed(False)
    event_loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(event_loop)
    try:
        yield event_loop
    finally:
        pending = [t for t in asyncio.all_tasks(event_loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            event_loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        event_loop.close()
        asyncio.set_event_loop(None)


def run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float) -> T:
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def until(
    predicate: Callable[[], object], timeout: float = 20, what: str = "condition"
) -> None:
    """Waits for `predicate()` while the loop (Qt and asyncio) keeps running; fails on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


def session_for(host: Host) -> Session:
    """A GUI session on the host's real backend socket, reached from outside the namespaces."""
    client = LocalClient(host.path(SOCKET), timeout=60)
    session = Session(client, TokenStore(use_system=False))
    session.feed.retry_first_s, session.feed.retry_max_s = 0.1, 0.5
    return session


def cell(table: QTableWidget, row: int, column: int) -> str:
    item = table.item(row, column)
    return item.text() if item is not None else ""


def menu(tray: Tray) -> dict[str, str]:
    """{entry key: text} of the tray menu's top level as it is rendered."""
    return {str(a.data()): a.text() for a in tray.menu.actions() if not a.isSeparator()}


def trigger(tray: Tray, key: str) -> None:
    action = next(a for a in tray.menu.actions() if a.data() == key)
    assert action.isEnabled(), f"menu entry {key} is disabled"
    action.trigger()


async def backend_state(mesh: Mesh, host: Host) -> str:
    """The state as the backend itself reports it to the CLI inside the host."""
    return str((await asyncio.to_thread(mesh.status, host))["state"])


async def has_interface(host: Host) -> bool:
    res = await host.arun(["ip", "link", "show", "pcloud0"], check=False)
    return res.returncode == 0


async def log_in(
    session: Session, link: str, *, username: str = "", password: str = "", key: str = ""
) -> LoginDialog:
    """Fills the login dialog as a user would, submits it and waits for the answer."""
    dialog = LoginDialog(session)
    dialog.link.setText(link)
    if key:
        dialog.by_key.setChecked(True)
        dialog.auth_key.setText(key)
    else:
        dialog.username.setText(username)
        dialog.password.setText(password)
    dialog.submit()
    assert dialog.task is not None
    await dialog.task
    return dialog


def flaky_k3s(host: Host) -> str:
    """A stand-in `k3s` whose first `k3s server` exits 1 (a broken start); later ones work."""
    path = host.path(K3S)
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = server ] && [ ! -e {K3S_FAILED_ONCE} ]; then\n'
        f"  : > {K3S_FAILED_ONCE}\n"
        '  echo "k3s stand-in: failing its first start on purpose" >&2\n'
        "  exit 1\n"
        "fi\n" + exec_line()
    )
    path.chmod(0o755)
    return K3S


# -- 1. login dialog, tray actions, live peers ---------------------------------------------------


def test_login_errors_tray_connect_disconnect_and_live_peers(
    lab: Lab, loop: asyncio.AbstractEventLoop
) -> None:
    rpi111, rpi112, laptop = (lab.add_host(n) for n in ("rpi111", "rpi112", "laptop"))
    mesh = Mesh(lab)
    link = mesh.start_server(rpi111)
    mesh.create_user("admin", PASSWORD, admin=True)
    key = mesh.auth_key("admin")
    mesh.start_backend(rpi112)
    session = session_for(rpi112)
    tray, window = Tray(session), MainWindow(session)
    session.start()
    fingerprint = link.rsplit("sha256:", 1)[1]
    wrong_fp = link.replace(fingerprint, ("0" if fingerprint[0] != "0" else "1") * 64)
    closed_port = f"https://{rpi111.ip}:1/#fp=sha256:{fingerprint}"

    async def scenario() -> None:
        await until(lambda: session.state == "NeedsLogin", what="NeedsLogin from the backend")
        assert menu(tray)["state"] == "Needs login"

        dialog = await log_in(session, wrong_fp, username="admin", password=PASSWORD)
        assert dialog.problem is not None and dialog.problem.kind == "wrong_fingerprint"
        assert dialog.error_title.text() == "Wrong fingerprint"
        assert not dialog.error_title.isHidden()
        dialog = await log_in(session, link, username="admin", password="not the password")
        assert dialog.problem is not None and dialog.problem.kind == "wrong_password", (
            dialog.problem
        )
        dialog = await log_in(session, closed_port, username="admin", password=PASSWORD)
        assert dialog.problem is not None and dialog.problem.kind == "server_unreachable", (
            dialog.problem
        )
        assert await backend_state(mesh, rpi112) == "NeedsLogin"  # none of them logged in

        await asyncio.to_thread(mesh.stop_backend, rpi112)
        await until(lambda: session.problem is not None, what="the not-running notice")
        assert session.problem is not None and session.problem.kind == "backend_not_running"
        assert menu(tray)["state"] == "The PCloud backend is not running"
        dialog = await log_in(session, link, username="admin", password=PASSWORD)
        assert dialog.problem is not None and dialog.problem.kind == "backend_not_running"
        assert dialog.error_title.text() == "The PCloud backend is not running"
        await asyncio.to_thread(mesh.start_backend, rpi112)
        await until(lambda: session.state == "NeedsLogin", what="the app to heal by itself")

        dialog = await log_in(session, link, username="admin", password=PASSWORD)
        assert dialog.problem is None
        await until(lambda: session.state == "Running", what="Running")
        assert await backend_state(mesh, rpi112) == "Running"
        await until(lambda: session.is_admin, what="the admin sign-in")
        me = session.status.self if session.status else None
        assert me is not None and me.hostname == "rpi112"
        assert menu(tray)["self"] == f"This device: rpi112 - {me.address}"
        assert window.model.rowCount() == 0

        # Another device joins on its own: the row appears from events, nobody clicks.
        await asyncio.to_thread(mesh.login, laptop, key=key)
        await until(lambda: window.model.rowCount() == 1, what="laptop in the peer table")
        peer = window.model.peers()[0]
        assert peer.hostname == "laptop"
        assert peer.address == await asyncio.to_thread(mesh.address, laptop)

        # Disconnect from the tray menu: the backend stops and removes its interface.
        assert await has_interface(rpi112)
        trigger(tray, "disconnect")
        await until(lambda: session.state == "Stopped", what="Stopped")
        assert await backend_state(mesh, rpi112) == "Stopped"
        assert not await has_interface(rpi112)
        assert "connect" in menu(tray) and "disconnect" not in menu(tray)
        # Connect: up again, and the tunnel carries traffic to the peer.
        trigger(tray, "connect")
        await until(lambda: session.state == "Running", what="Running again")
        assert await backend_state(mesh, rpi112) == "Running"
        assert await has_interface(rpi112)
        await asyncio.to_thread(mesh.wait_ping, rpi112, peer.address)

    try:
        run(loop, scenario(), 75)
    finally:
        run(loop, session.close(), 10)


# -- 2. wizard install path, Retry, admin key ----------------------------------------------------


def test_wizard_install_retry_then_admin_key_registers_a_device(
    lab: Lab, loop: asyncio.AbstractEventLoop
) -> None:
    rpi111, rpi112 = lab.add_host("rpi111"), lab.add_host("rpi112")
    mesh = Mesh(lab)
    # The wizard never names a K3s binary: the backend's own --k3s-binary default supplies it.
    mesh.start_backend(
        rpi111, "--k3s-root", ROOT, "--service-manager", "child", "--k3s-binary", flaky_k3s(rpi111)
    )
    mesh.start_backend(rpi112)
    app = PCloudApp(
        LocalClient(rpi111.path(SOCKET), timeout=60), TokenStore(use_system=False), use_tray=True
    )
    session = app.session
    session.feed.retry_first_s, session.feed.retry_max_s = 0.1, 0.5
    device = session_for(rpi112)
    app.start()
    device.start()

    async def scenario() -> None:
        # NeedsLogin with no server known: the app offers the wizard by itself.
        await until(
            lambda: app.wizard is not None and app.wizard.isVisible(), what="the first-run wizard"
        )
        wizard = app.wizard
        assert wizard is not None
        wizard.choose_page.install.setChecked(True)
        wizard.next()
        assert wizard.currentId() == NETWORK
        wizard.network_page.address.setEditText(rpi111.ip)  # the lab host's LAN address
        wizard.next()
        assert wizard.currentId() == PROGRESS
        page, view = wizard.progress_page, wizard.progress_page.view

        # The first K3s start fails: the step is named and Retry offered.
        await until(lambda: not view.retry.isHidden(), timeout=40, what="Retry after the failure")
        assert page.job is not None and page.job.state == "failed"
        first_job = page.job.id
        states = dict(view.step_states())
        assert states["coordination server"] == "done" and states["K3s"] == "failed", states
        assert "K3s" in view.error.text() and "exited with code 1" in view.error.text(), (
            view.error.text()
        )
        assert not page.isComplete()
        assert not wizard.button(QWizard.WizardButton.NextButton).isEnabled()
        assert rpi111.path(K3S_FAILED_ONCE).exists()

        # Retry resumes the same job: finished steps stay done, K3s and the rest finish.
        view.retry.click()
        await until(page.isComplete, timeout=40, what="the install to finish after Retry")
        assert page.job is not None and page.job.id == first_job
        assert [s for _, s in view.step_states()] == ["done"] * 5
        assert view.retry.isHidden()
        assert session.state == "Running"
        assert session.status is not None and session.status.self is not None
        assert session.status.self.role == "server"

        wizard.next()
        assert wizard.currentId() == ACCOUNT
        account = wizard.account_page
        assert account.setup_code.text()  # from the job's result
        account.username.setText("admin")
        account.password.setText(PASSWORD)
        account.confirm.setText(PASSWORD)
        wizard.next()
        await until(lambda: wizard.currentId() == DONE, what="the first admin to be created")
        await until(lambda: session.is_admin, what="the admin tab")
        link = wizard.done_page.link.text()
        assert link.startswith(f"https://{rpi111.ip}:8443/#fp=sha256:"), link
        mesh.server = rpi111  # the wizard's server: the admin CLI checks what the GUI did
        users = await asyncio.to_thread(mesh.admin_json, "users", "list")
        assert [(u["username"], u["admin"]) for u in users] == [("admin", True)]

        # Admin pages: a single-use client key, shown once.
        admin = app.window.admin_page
        assert app.window.tabs.indexOf(admin) >= 0
        admin.key_reusable.setChecked(False)
        admin.key_role.setCurrentText("client")
        create = next(b for b in admin.findChildren(type(view.retry)) if b.text() == "Create key")
        create.click()
        await until(
            lambda: not admin.new_key.isHidden() and admin.new_key.value.text(), what="the new key"
        )
        key = admin.new_key.value.text()
        await until(lambda: admin.keys.rowCount() == 1, what="the key listed")

        # The second host logs in with that key through its own GUI login dialog.
        await until(lambda: device.state == "NeedsLogin", what="rpi112's backend")
        dialog = await log_in(device, link, key=key)
        assert dialog.problem is None, dialog.problem
        await until(lambda: device.state == "Running", what="rpi112 Running")
        assert await backend_state(mesh, rpi112) == "Running"
        # It appears on the server's GUI without a click, and in the admin's device list.
        await until(
            lambda: [p.hostname for p in app.window.model.peers()] == ["rpi112"],
            what="rpi112 in the server's peer table",
        )
        admin.refresh()
        # A refresh replaces devices, users and keys in turn: the spent key is the last to move.
        await until(lambda: cell(admin.keys, 0, 5) == "yes", what="the key listed as used")
        names = {
            cell(admin.devices, r, 1): cell(admin.devices, r, 3)
            for r in range(admin.devices.rowCount())
        }
        assert names == {"rpi111": "server", "rpi112": "client"}

    try:
        run(loop, scenario(), 85)
    finally:
        run(loop, device.close(), 10)
        run(loop, app.shutdown(), 10)
