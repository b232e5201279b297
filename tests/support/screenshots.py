"""Screenshots for the docs: `python -m tests.support.screenshots OUTDIR` (from the repository
root; `bash .ci/screenshots` runs it). A docs tool, not shipped in the wheel.

Renders the real widgets with demo data (no backend needed) on an X server with a tray host, so
the tray menu is the one a desktop would show. With no DISPLAY it starts its own Xvfb and trayer
(both must be installed) and stops them at the end. Writes tray-menu.png, main-window.png,
wizard-progress.png, wizard-failed.png, wizard-done.png, login-error.png, admin-page.png and
admin-install.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

NOW = datetime(2026, 11, 25, 15, 42, tzinfo=UTC)
JOIN_LINK = "https://192.168.1.10:8443/#fp=sha256:" + "6bf9a5bd558fd9bb" * 4
STEPS = [
    "Key pair",
    "Coordination server",
    "Register this device",
    "K3s server",
    "Setup code and first account",
]


def _peer(
    node_id: int,
    host: str,
    user: str,
    role: str,
    addr: str,
    ep: str | None,
    hs_s: int | None,
    rx: int,
    tx: int,
    online: bool,
    path: str | None = None,
) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "hostname": host,
        "user": user,
        "role": role,
        "tags": [],
        "public_key": "A" * 43 + "=",
        "address": addr,
        "endpoints": [ep] if ep else [],
        "online": online,
        "last_seen": NOW.isoformat(),
        "endpoint": ep if online else None,
        "last_handshake": (NOW - timedelta(seconds=hs_s)).isoformat() if hs_s else None,
        "rx_bytes": rx,
        "tx_bytes": tx,
        "path": path or (f"direct {ep}" if ep and online else None),
    }


def demo_status() -> dict[str, Any]:
    me = _peer(3, "laptop", "alice", "client", "10.0.0.3", None, None, 0, 0, True)
    return {
        "state": "Running",
        "self": {
            k: me[k]
            for k in (
                "node_id",
                "hostname",
                "user",
                "role",
                "tags",
                "public_key",
                "address",
                "endpoints",
                "online",
                "last_seen",
            )
        },
        "server_url": JOIN_LINK,
        "error": None,
        "peers": [
            _peer(
                1,
                "nas",
                "alice",
                "server",
                "10.0.0.1",
                "192.168.1.10:51820",
                12,
                734003200,
                52428800,
                True,
            ),
            _peer(
                2,
                "build-box",
                "carol",
                "server",
                "10.0.0.2",
                "192.168.1.11:51820",
                3,
                5368709120,
                1288490188,
                True,
            ),
            _peer(
                4,
                "pi-kitchen",
                "alice",
                "client",
                "10.0.0.4",
                "192.168.1.31:41641",
                95,
                2048,
                4096,
                True,
            ),
            _peer(
                5,
                "bob-phone",
                "bob",
                "client",
                "10.0.0.5",
                "203.0.113.7:51820",
                140,
                3145728,
                1048576,
                True,
                path="relay nas",
            ),  # behind a mobile network's symmetric NAT
            _peer(6, "bob-laptop", "bob", "client", "10.0.0.6", None, None, 0, 0, False),
        ],
    }


def demo_job(
    states: list[str],
    state: str,
    detail: dict[int, str] | None = None,
    result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": "demo",
        "kind": "install-server",
        "state": state,
        "error": (detail or {}).get(3),
        "result": result,
        "steps": [
            {"name": n, "state": s, "detail": (detail or {}).get(i)}
            for i, (n, s) in enumerate(zip(STEPS, states, strict=True))
        ],
    }


@contextlib.contextmanager
def x_server() -> Iterator[None]:
    """Uses $DISPLAY, or starts Xvfb and trayer for the duration."""
    if os.environ.get("DISPLAY"):
        yield
        return
    if not shutil.which("Xvfb"):
        raise SystemExit("screenshots need an X server: install xvfb (and trayer for the tray)")
    display = f":{90 + os.getpid() % 9}"
    procs = [
        subprocess.Popen(
            ["Xvfb", display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    os.environ["DISPLAY"] = display
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    try:
        time.sleep(1.0)
        if shutil.which("trayer"):
            procs.append(
                subprocess.Popen(
                    [
                        "trayer",
                        "--edge",
                        "top",
                        "--align",
                        "right",
                        "--widthtype",
                        "request",
                        "--height",
                        "32",
                        "--SetDockType",
                        "true",
                        "--tint",
                        "0xdddddd",
                        "--transparent",
                        "true",
                        "--alpha",
                        "0",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            time.sleep(1.0)
        yield
    finally:
        for proc in reversed(procs):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


async def settle(seconds: float = 0.3) -> None:
    await asyncio.sleep(seconds)  # lets Qt lay out and paint


async def shoot(out: Path) -> None:
    from PySide6.QtCore import QPoint, QRect
    from PySide6.QtWidgets import QApplication, QMenu

    from pcloud.backend.localapi.client import LocalClient
    from pcloud.backend.localapi.schemas import Job, Status
    from pcloud.gui.app import PCloudApp
    from pcloud.gui.dialogs.wizard import PROGRESS, FirstRunWizard
    from pcloud.gui.errors import Problem
    from pcloud.gui.secrets import TokenStore
    from pcloud.gui.views.admin_page import _fill

    qapp = QApplication.instance()
    assert isinstance(qapp, QApplication)
    app = PCloudApp(LocalClient("/nonexistent/pcloud.sock"), TokenStore(use_system=False))
    session = app.session
    app.window.admin_page.refresh = lambda: None  # type: ignore[method-assign]
    app.window.model.set_clock(NOW)
    app.start(follow_events=False)
    session.apply_status(Status.model_validate(demo_status()))
    app.window.move(40, 60)
    await settle(1.0)

    # The tray menu, popped up under the tray icon, captured from the screen.
    if app.tray is not None:
        app.window.hide()
        geo = app.tray.icon.geometry()
        anchor = QPoint(geo.right() - 330, geo.bottom() + 4) if geo.isValid() else QPoint(900, 40)
        app.tray.menu.popup(anchor)
        await settle(0.6)
        menu = app.tray.menu.geometry()
        sub = next((m for a in app.tray.menu.actions() if isinstance(m := a.menu(), QMenu)), None)
        area = menu.united(geo) if geo.isValid() else menu
        if sub is not None:
            peers_action = next(a for a in app.tray.menu.actions() if a.menu() is sub)
            app.tray.menu.setActiveAction(peers_action)
            await settle(0.6)
            if sub.isVisible():
                area = area.united(sub.geometry())
        area = area.adjusted(-12, -8, 12, 12).intersected(QRect(0, 0, 1280, 800))
        screen = qapp.primaryScreen().grabWindow(0)
        screen.copy(area).save(str(out / "tray-menu.png"))
        app.tray.menu.hide()
        app.window.show()
        await settle()

    app.window.grab().save(str(out / "main-window.png"))

    # The admin page with demo lists and a freshly created key.
    session._set_token("demo-token", True)
    await settle()
    page = app.window.admin_page
    app.window.tabs.setCurrentWidget(page)
    page.tabs.setCurrentIndex(2)
    _fill(page.devices, [["1", "nas", "alice", "server", "10.0.0.1", "yes"]])
    _fill(
        page.keys,
        [
            ["7f3a9d2c41e8", "alice", "client", "yes", "2026-12-02 15:42", "no"],
            ["19c0b6e2d7a4", "alice", "server", "no", "2026-11-26 15:42", "yes"],
        ],
    )
    page.key_reusable.setChecked(True)
    page.new_key.set_value("pcak_7f3a9d2c41e8_Qm4Zr8TfW2yKc9LpX3vNd6HsJ1aGe5BuY7oRi0EtMwA")
    page.new_key.show()
    await settle()
    app.window.grab().save(str(out / "admin-page.png"))

    # The "Add a device" tab: the server's one-line install and its QR code.
    page.tabs.setCurrentWidget(page.install)
    page.install.show_info(
        {
            "line": "curl -fsSLk --pinnedpubkey sha256//W7mLx1cM0a2PqJ9vT4yZbK8dHf3nE6sRuQ5oVgBiA1c= "
            "https://192.168.1.10:8443/install.sh | sudo sh -s -- --auth-key pk_...",
            "base_url": "https://192.168.1.10:8443",
            "pin": "",
            "join_link": JOIN_LINK,
            "version": "0.1.0",
            "packages": ["pcloud_0.1.0_amd64.deb", "pcloud_0.1.0_arm64.deb"],
        }
    )
    await settle()
    app.window.grab().save(str(out / "admin-install.png"))

    # The wizard's progress page, mid-way and then stopped on a failing step.
    wizard = FirstRunWizard(session)
    wizard.progress_page.start = lambda: None  # type: ignore[method-assign]
    wizard.choose_page.install.setChecked(True)
    wizard.move(60, 60)
    wizard.show()
    wizard.network_page.address.setEditText("192.168.1.10")
    wizard.next()
    wizard.next()
    assert wizard.currentId() == PROGRESS
    wizard.progress_page.job_id = "demo"
    session.apply_job(
        Job.model_validate(
            demo_job(
                ["done", "done", "running", "pending", "pending"],
                "running",
                {
                    0: "created /var/lib/pcloud/private.key (0600)",
                    1: "listening on 192.168.1.10:8443",
                },
            )
        )
    )
    await settle()
    wizard.grab().save(str(out / "wizard-progress.png"))
    session.apply_job(
        Job.model_validate(
            demo_job(
                ["done", "done", "done", "failed", "pending"],
                "failed",
                {3: "port 6443 is already in use by another program (k3s was not started)"},
            )
        )
    )
    await settle()
    wizard.grab().save(str(out / "wizard-failed.png"))
    session.apply_job(
        Job.model_validate(
            demo_job(
                ["done"] * 5, "done", result={"setup_code": "K7QF-2M9D", "join_link": JOIN_LINK}
            )
        )
    )
    wizard.next()
    wizard.account_page.created = True
    wizard.next()
    await settle()
    wizard.grab().save(str(out / "wizard-done.png"))
    wizard.hide()

    dialog = app.open_login(JOIN_LINK)
    dialog.move(80, 80)
    dialog.username.setText("alice")
    dialog.show_problem(
        Problem(
            "wrong_fingerprint",
            "Wrong fingerprint",
            "The server's certificate does not match the join link. Ask for "
            "a fresh link; do not continue if you did not expect this.",
        )
    )
    await settle()
    dialog.grab().save(str(out / "login-error.png"))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m tests.support.screenshots OUTDIR\n")
        return 2
    out = Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    with x_server():
        import qasync
        from PySide6.QtWidgets import QApplication

        qapp = QApplication(sys.argv[:1])
        qapp.setApplicationName("pcloud")
        qapp.setQuitOnLastWindowClosed(False)
        qapp.setStyle("Fusion")  # the same look on every machine the script runs on
        loop = qasync.QEventLoop(qapp)
        asyncio.set_event_loop(loop)
        with loop:
            loop.run_until_complete(shoot(out))
    for path in sorted(out.glob("*.png")):
        print(path)  # the one module allowed to print: it is a script
    return 0


if __name__ == "__main__":
    code = main()
    # PySide6 aborts in the interpreter's final garbage collection here ("none_dealloc"), after
    # every picture is saved, which turned a good run into exit 134: leave without finalizing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
