"""pcloud-backend: settings -> driver -> LocalBackend -> local API on its Unix socket.

Runs until SIGTERM/SIGINT (uvicorn's handlers end `serve`), then stops its loops and leaves the
WireGuard interface up, so a restart (or an upgrade) does not drop tunnels.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from pcloud.backend.config import BackendSettings, ConfigError, load_settings
from pcloud.backend.local import LocalBackend
from pcloud.backend.localapi.peercred import default_write_rule
from pcloud.backend.localapi.routes import create_app
from pcloud.backend.localapi.server import SocketInUse, bind_socket, make_server, remove_socket
from pcloud.backend.wg.driver import Driver, DriverError, DriverEvent

log = logging.getLogger("pcloud.backend")


def make_driver(settings: BackendSettings) -> Driver:
    if settings.driver == "fake":
        # In-memory WireGuard: lets tests and demos run a real backend without root or netlink.
        from pcloud.backend.wg.fake import FakeDriver

        return FakeDriver(settings.interface)
    from pcloud.backend.wg.select import choose_driver

    def on_event(event: DriverEvent) -> None:
        log.info("WireGuard driver: %s %s", event.kind, event.detail)

    kwargs: dict[str, str] = {}
    if settings.wg_socket_dir:
        kwargs["socket_dir"] = str(settings.wg_socket_dir)
    if settings.wireguard_go:
        kwargs["binary"] = settings.wireguard_go
    prefer = settings.driver if settings.driver in ("kernel", "userspace") else "auto"
    return choose_driver(settings.interface, prefer=prefer, on_event=on_event,  # type: ignore[arg-type]
                         **kwargs)


async def run(settings: BackendSettings) -> None:
    driver = make_driver(settings)
    backend = LocalBackend(settings, driver)
    sock = bind_socket(settings.socket, mode=settings.socket_mode, group=settings.socket_group)
    backend_uid, admin_gid = default_write_rule(settings.socket_group)
    app = create_app(backend, admin_gid=admin_gid, backend_uid=backend_uid)
    server = make_server(app, log_level=settings.log_level.lower())
    try:
        await backend.start()
        log.info("local API on %s (driver %s)", settings.socket, driver.kind)
        await server.serve(sockets=[sock])
    finally:
        await backend.shutdown()
        sock.close()
        remove_socket(settings.socket)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ConfigError as e:
        sys.stderr.write(f"pcloud-backend: {e}\n")
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Their DEBUG output is every netlink message and socket event: noise even when debugging.
    for noisy in ("pyroute2", "httpcore", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))
    try:
        asyncio.run(run(settings))
    except (SocketInUse, DriverError, ConfigError, PermissionError) as e:
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
