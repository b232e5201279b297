"""asyncio client for the wireguard-go UAPI unix socket (`SOCKET_DIR/IFNAME.sock`).

One connection per transaction: wireguard-go serves each connection in its own goroutine, and a
fresh connection means a half-read answer can never desynchronise the next request. The socket
directory is a parameter because the lab gives each virtual host a private mount namespace (and
the userspace driver can bind-mount another directory over /var/run/wireguard for wireguard-go).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct

from pcloud.backend.wg.diff import ConfigDiff, DeviceState
from pcloud.backend.wg.driver import DriverError
from pcloud.backend.wg.uapi import GET_REQUEST, encode_set, parse_errno, parse_get

DEFAULT_SOCKET_DIR = "/var/run/wireguard"
# A get=1 answer is ~400 bytes per peer; this leaves room for tens of thousands of peers.
_READ_LIMIT = 64 * 1024 * 1024


def socket_path(name: str, socket_dir: str = DEFAULT_SOCKET_DIR) -> str:
    return os.path.join(socket_dir, f"{name}.sock")


class UapiClient:
    """Talks to the wireguard-go that serves interface `name`."""

    def __init__(
        self, name: str, socket_dir: str = DEFAULT_SOCKET_DIR, *, timeout: float = 10.0
    ) -> None:
        self.name = name
        self.path = socket_path(name, socket_dir)
        self.timeout = timeout

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.open_unix_connection(self.path, limit=_READ_LIMIT)
        except (OSError, TimeoutError) as exc:
            raise DriverError(f"cannot reach wireguard-go at {self.path}: {exc}") from None

    async def request(self, data: bytes, op: str) -> str:
        """Send one request and return the raw answer up to and including the empty line."""
        reader, writer = await self._open()
        try:
            writer.write(data)
            await writer.drain()
            async with asyncio.timeout(self.timeout):
                answer = await reader.readuntil(b"\n\n")
        except asyncio.IncompleteReadError as exc:
            # wireguard-go hangs up without an errno on a request it cannot parse at all.
            answer = exc.partial
        except (OSError, TimeoutError, asyncio.LimitOverrunError) as exc:
            raise DriverError(f"UAPI {op} on {self.path} failed: {exc!r}") from None
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
        return answer.decode("utf-8", errors="replace")

    async def get(self) -> DeviceState:
        return parse_get(await self.request(GET_REQUEST, "get"))

    async def set(self, change: ConfigDiff, *, replace_peers: bool = False) -> None:
        if change.empty and not replace_peers:
            return
        parse_errno(await self.request(encode_set(change, replace_peers=replace_peers), "set"))

    async def server_pid(self) -> int | None:
        """PID of the process that listens on the socket (SO_PEERCRED gives the credentials of
        the listener), i.e. the wireguard-go to supervise when we adopt one. None if the
        socket does not answer."""
        try:
            reader, writer = await self._open()
        except DriverError:
            return None
        try:
            sock: socket.socket = writer.get_extra_info("socket")
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, _uid, _gid = struct.unpack("3i", creds)
            return pid if pid > 0 else None
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
