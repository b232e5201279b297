"""systemd-resolved: per-link DNS on the WireGuard interface, only the network's domain routed
to us (the way Tailscale and NetBird configure it, through `resolvectl`).

resolved keeps link settings in memory only and drops them when the interface goes, so a crash
leaves nothing behind; `revert` undoes them while the interface stays.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

VARLINK = Path("/run/systemd/resolve/io.systemd.Resolve")  # exists while resolved runs
UPSTREAM_FILE = Path("/run/systemd/resolve/resolv.conf")  # resolved's own upstream servers


class ResolvedError(RuntimeError):
    """resolvectl refused a setting; the message has its stderr."""


def resolved_running() -> bool:
    return shutil.which("resolvectl") is not None and VARLINK.exists()


async def _resolvectl(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "resolvectl", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise ResolvedError(f"resolvectl {' '.join(args)}: {err.decode(errors='replace').strip()}")


async def apply_link(interface: str, server: str, domain: str) -> None:
    """Our resolver for `interface`; `domain` both routes there and is a search domain (bare
    HOSTNAME works); nothing else goes to it (no default route); no LLMNR/mDNS on the tunnel."""
    await _resolvectl("dns", interface, server)
    await _resolvectl("domain", interface, domain)
    await _resolvectl("default-route", interface, "false")
    for proto in ("llmnr", "mdns"):
        try:
            await _resolvectl(proto, interface, "no")
        except ResolvedError as e:  # older resolved without the verb: harmless
            log.debug("%s", e)
    log.info("systemd-resolved: %s on %s answers *.%s", server, interface, domain)


async def revert_link(interface: str) -> None:
    try:
        await _resolvectl("revert", interface)
    except ResolvedError as e:  # the interface is already gone, and its settings with it
        log.debug("%s", e)
