"""pcloud-backend: settings -> driver -> LocalBackend -> local API on its Unix sockets (the
main one and its read-only `.ro` twin, localapi/server.py).

Runs until SIGTERM/SIGINT (uvicorn's handlers end `serve`), then stops its loops and leaves the
WireGuard interface up, so a restart (or an upgrade) does not drop tunnels.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import sys
from types import FrameType

import uvicorn

from pcloud.backend.config import BackendSettings, ConfigError, load_settings
from pcloud.backend.local import LocalBackend
from pcloud.backend.localapi.peercred import default_write_rule
from pcloud.backend.localapi.routes import create_app
from pcloud.backend.localapi.server import (
    LocalApiLimits,
    SocketInUse,
    bind_sockets,
    ensure_group,
    make_server,
    remove_sockets,
)
from pcloud.backend.wg.driver import Driver, DriverError, DriverEvent

log = logging.getLogger("pcloud.backend")


def make_driver(settings: BackendSettings) -> Driver:
    if settings.driver == "fake":
        # In-memory WireGuard: lets tests and demos run a real backend without root or netlink.
        from pcloud.backend.wg.fake import FakeDriver

        return FakeDriver(settings.interface)
    from pcloud.backend.wg.select import choose_driver
    from pcloud.backend.wg.uapi_client import DEFAULT_SOCKET_DIR

    def on_event(event: DriverEvent) -> None:
        log.info("WireGuard driver: %s %s", event.kind, event.detail)

    return choose_driver(
        settings.interface,
        prefer=settings.driver,  # not "fake" here: a Literal narrowed by the test above
        socket_dir=str(settings.wg_socket_dir or DEFAULT_SOCKET_DIR),
        binary=settings.wireguard_go or "wireguard-go",
        on_event=on_event,
    )


def raise_open_files_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard one: local callers, WireGuard, K3s supervision and the
    coordination server's connections all need descriptors (the unit sets LimitNOFILE too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-files limit from %d: %s", soft, e)


SHUTDOWN_TIMEOUT_S = 10.0  # an operation holding the backend's lock (a login) may delay exit


def _stop_on_signals(server: uvicorn.Server) -> None:
    """SIGTERM/SIGINT end `serve` and let `run` clean up, whenever they arrive.

    uvicorn handles them only while serving, and afterwards re-raises the signal with the
    handler it found: with Python's defaults that kills the process (SIGTERM) before our
    `finally` removes the sockets and stops the loops. With this handler in place the re-raise
    is harmless, and a signal during start-up makes `serve` return right after binding.
    """

    def stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)


async def run(settings: BackendSettings) -> None:
    driver = make_driver(settings)
    backend = LocalBackend(settings, driver)
    # The group first (created if missing): the write rule needs its gid.
    ensure_group(settings.socket_group)
    backend_uid, admin_gid = default_write_rule(settings.socket_group)
    app = create_app(backend, admin_gid=admin_gid, backend_uid=backend_uid)
    limits = LocalApiLimits(
        head_timeout_s=settings.api_head_timeout_s,
        max_connections_per_uid=settings.api_max_connections_per_uid,
    )
    server = make_server(app, log_level=settings.log_level.lower(), limits=limits)
    raise_open_files_limit()
    # Before the sockets exist: from then on every way out goes through the `finally`.
    _stop_on_signals(server)
    socks = bind_sockets(
        settings.socket, group=settings.socket_group, readonly=settings.readonly_socket
    )
    try:
        await backend.start()
        log.info(
            "local API on %s%s (driver %s)",
            settings.socket,
            " and read-only .ro" if settings.readonly_socket else "",
            driver.kind,
        )
        await server.serve(sockets=socks)
    finally:
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                await backend.shutdown()
        except TimeoutError:
            log.warning(
                "backend loops did not stop within %.0f s; exiting anyway", SHUTDOWN_TIMEOUT_S
            )
        finally:
            for sock in socks:
                sock.close()
            remove_sockets(settings.socket)


def restore_dns(settings: BackendSettings) -> int:
    """`pcloud-backend --restore-dns`: put back the resolver file a stopped or killed backend
    left managed (package removal runs it); nothing to do is success too."""
    from pcloud.backend.dns.resolvconf import ManagedResolvConf

    managed = ManagedResolvConf(settings.resolv_conf, settings.state_dir)
    try:
        restored = managed.restore()
    except OSError as e:
        log.error("could not restore %s: %s", settings.resolv_conf, e)
        return 1
    print(f"{settings.resolv_conf}: {'restored' if restored else 'nothing to restore'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    restore = "--restore-dns" in args
    if restore:
        args.remove("--restore-dns")
    try:
        settings = load_settings(args)
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
    if restore:
        return restore_dns(settings)
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
