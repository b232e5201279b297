"""Every pair of lab hosts at once: first pings through the overlay, and the path each side's
status shows for the other, watched until it is the expected one.

For the site grid test (tests/e2e/test_site_grid.py): a pair loop one by one would take the sum
of the pairs' times, this takes the longest one. A ping try is `ping -c1 -W1` inside the source
host (nsenter: no Python start-up per try); statuses come from each host's local API socket,
read from this process (GET /v1/status, what `pcloud status --json` prints).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from .host import Host
from .process import kill_group
from .site_paths import matches
from .wait import WaitTimeout, async_wait_for

Pair = tuple[str, str]  # (from, to) host names


async def ping_once(src: Host, ip: str) -> bool:
    """One echo from `src` to `ip`, answered within a second."""
    proc = await asyncio.create_subprocess_exec(
        *src.enter_argv(["ping", "-n", "-c1", "-W1", ip]),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return await proc.wait() == 0
    finally:
        if proc.returncode is None:  # cancelled meanwhile: no ping left behind
            kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()


async def first_ping(src: Host, ip: str, timeout: float) -> float | None:  # noqa: ASYNC109
    """Seconds until `src` first gets an answer from `ip`, or None if none came in `timeout`."""
    start = time.monotonic()
    try:
        await async_wait_for(
            lambda: ping_once(src, ip), timeout=timeout, interval=0.2, what=f"{src.name} -> {ip}"
        )
    except WaitTimeout:
        return None
    return time.monotonic() - start


async def keep_talking(src: Host, ip: str, done: asyncio.Event, every: float = 1.0) -> None:
    """One echo from `src` to `ip` every `every` seconds until `done`: traffic, as a user's
    would flow. A pair that the relay carried first (its peer learned of it a moment late) goes
    back to direct by a probe, and a probe is judged by the answers to what we send: a pair
    that falls silent after its first ping would stay on the relay until its next traffic."""
    while not done.is_set():
        await ping_once(src, ip)
        try:
            async with asyncio.timeout(every):
                await done.wait()
        except TimeoutError:
            pass


async def running(host: Host) -> dict[str, Any]:
    """The host's status once its backend is Running with an address."""

    async def ready() -> dict[str, Any] | None:
        st = await local_status(host)
        return st if st["state"] == "Running" and st.get("self") else None

    st = await async_wait_for(ready, timeout=60, interval=0.2, what=f"{host.name} Running")
    return dict(st)


async def local_status(host: Host) -> dict[str, Any]:
    """The host's `GET /v1/status` through its backend's socket."""
    sock = str(host.path("/run/pcloud/backend.sock"))
    transport = httpx.AsyncHTTPTransport(uds=sock)
    async with httpx.AsyncClient(transport=transport, base_url="http://local", timeout=10) as c:
        r = await c.get("/v1/status")
        r.raise_for_status()
        data: dict[str, Any] = r.json()
    return data


@dataclass
class PathWatch:
    """Reads every host's status until each pair in `expected` (pair -> a glob over the path
    text, site_paths.predict's) has shown a matching path once and every pair in `hold` shows
    it at the same moment; `seen` keeps each pair's first matching path and when (seconds after
    `start`), `last` the latest path of every pair, `detours` the other paths a `hold` pair
    showed once it had matched and any relay before, `peers` each host's peers."""

    hosts: list[Host]
    expected: Mapping[Pair, str]
    hold: frozenset[Pair] = frozenset()
    start: float = field(default_factory=time.monotonic)
    seen: dict[Pair, tuple[str, float]] = field(default_factory=dict)
    last: dict[Pair, str] = field(default_factory=dict)
    detours: dict[Pair, list[str]] = field(default_factory=dict)
    peers: dict[str, set[str]] = field(default_factory=dict)

    async def _read(self) -> bool:
        statuses = await asyncio.gather(*(local_status(h) for h in self.hosts))
        now = time.monotonic() - self.start
        for host, st in zip(self.hosts, statuses, strict=True):
            self.peers[host.name] = {p["hostname"] for p in st["peers"]}
            for p in st["peers"]:
                pair = (host.name, p["hostname"])
                self.last[pair] = path = p["path"]
                if pair not in self.expected:
                    continue
                on_path = matches(path, self.expected[pair])
                if on_path and pair not in self.seen:
                    self.seen[pair] = (path, now)
                elif not on_path and pair in self.hold and (pair in self.seen or "relay" in path):
                    self.detours.setdefault(pair, []).append(f"{path} at {now:.1f}")
        held = all(matches(self.last.get(p), self.expected[p]) for p in self.hold)
        return len(self.seen) == len(self.expected) and held

    async def run(self, timeout: float) -> bool:  # noqa: ASYNC109
        """True once every pair showed its expected path (the `hold` pairs all at once);
        False at the deadline."""
        try:
            await async_wait_for(self._read, timeout=timeout, interval=0.3, what="the paths")
        except WaitTimeout:
            return False
        return True
