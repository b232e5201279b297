"""pcloud-gui: refuse root, keep one instance per user, then run the app on a qasync loop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from pcloud.backend.localapi.client import DEFAULT_SOCKET, LocalClient

ROOT_REFUSAL = (
    "pcloud-gui: refusing to run as root. Start it as your desktop user; the backend does the "
    "privileged work. (Tests and screenshots may pass --allow-root.)\n"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pcloud-gui", description="PCloud tray app")
    p.add_argument(
        "--socket",
        type=Path,
        default=Path(os.environ.get("PCLOUD_SOCKET", str(DEFAULT_SOCKET))),
        help=f"backend local API socket (default {DEFAULT_SOCKET})",
    )
    p.add_argument(
        "--hidden",
        action="store_true",
        help="start in the tray without opening the window (autostart)",
    )
    p.add_argument("--allow-root", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--instance-name", help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.geteuid() == 0 and not args.allow_root:
        # Root has no desktop session bus, and a root GUI would be a needless attack surface.
        sys.stderr.write(ROOT_REFUSAL)
        return 2
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    # Qt is imported only past the root check, so the refusal works without a display.
    import qasync
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from pcloud.gui.app import PCloudApp
    from pcloud.gui.icons import named_icon
    from pcloud.gui.instance import SingleInstance
    from pcloud.gui.secrets import TokenStore

    qapp = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(qapp, QApplication)
    qapp.setApplicationName("pcloud")
    qapp.setApplicationDisplayName("PCloud")
    qapp.setDesktopFileName("pcloud")  # the StatusNotifierItem id and the .desktop match
    qapp.setWindowIcon(named_icon("app"))
    qapp.setQuitOnLastWindowClosed(False)  # closing the wizard must not end the tray

    instance = SingleInstance(args.instance_name)
    if instance.notify_running():
        sys.stderr.write("pcloud-gui: already running; showed its window\n")
        return 0
    instance.listen()

    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    app = PCloudApp(LocalClient(args.socket), TokenStore(), start_hidden=args.hidden)
    instance.show_requested.connect(app.show_window)
    done = asyncio.Event()
    app.quit_requested.connect(done.set)
    qapp.aboutToQuit.connect(done.set)
    # Ctrl-C and a session's SIGTERM end the app cleanly. Python runs signal handlers only
    # between bytecodes, so a slow timer gives it a chance while Qt sits in C++.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: loop.call_soon_threadsafe(done.set))
    wake = QTimer()
    wake.start(500)
    wake.timeout.connect(lambda: None)

    async def run() -> None:
        app.start()
        await done.wait()
        await app.shutdown()

    with loop:
        loop.run_until_complete(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
