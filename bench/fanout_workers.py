"""The fan-out benchmark's harness: the client worker processes and what they need.

`Workers` starts the bench.fanout_client processes (spawned) and speaks the small
request/answer protocol over their pipes; the functions read a gauge from the server's /metrics,
raise the open-files limit the server and the workers inherit, take a percentile and make a
node key. bench.stream_memory uses them too; a process's CPU and RSS are bench.procfs's.
"""

from __future__ import annotations

import base64
import math
import multiprocessing as mp
import os
import resource
import time
from multiprocessing.connection import Connection, wait
from typing import Any

import httpx

from .fanout_client import worker_main

# ---- server process figures -----------------------------------------------------------------


def metric(client: httpx.Client, name: str) -> float:
    text = client.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def raise_nofile(needed: int) -> None:
    """Raise the soft open-files limit; the server subprocess and the workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"need {needed} open files but the hard limit is {hard}: lower --nodes or raise it"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- worker processes -------------------------------------------------------------------------


class Workers:
    """The client processes and the small request/answer protocol over their pipes."""

    def __init__(self, count: int) -> None:
        # spawn, not fork: the parent may hold threads (httpx, the test runner) by then.
        ctx = mp.get_context("spawn")
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        self.done: set[tuple[int, int]] = set()  # (change, worker) pairs reported done
        for _ in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child,), daemon=True)
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)

    def _handle(self, i: int, msg: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """Stash asynchronous messages; return the others."""
        if msg[0] == "done":
            self.done.add((msg[1], i))
            return None
        if msg[0] == "error":
            raise RuntimeError(f"client worker {i} failed:\n{msg[1]}")
        return msg

    def recv(self, i: int, kind: str, timeout: float) -> tuple[Any, ...]:
        deadline = time.monotonic() + timeout
        conn = self.conns[i]
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not conn.poll(left):
                raise TimeoutError(f"client worker {i} did not answer {kind!r} in {timeout:g} s")
            msg = self._handle(i, conn.recv())
            if msg is None:
                continue
            if msg[0] != kind:
                raise RuntimeError(f"client worker {i}: expected {kind!r}, got {msg[0]!r}")
            return msg

    def call(self, msgs: list[tuple[Any, ...]], kind: str, timeout: float) -> list[tuple[Any, ...]]:
        """Send one message to each worker and wait for each one's `kind` answer."""
        for conn, msg in zip(self.conns, msgs, strict=True):
            conn.send(msg)
        return [self.recv(i, kind, timeout) for i in range(len(self.conns))]

    def broadcast(self, msg: tuple[Any, ...], kind: str, timeout: float) -> list[tuple[Any, ...]]:
        return self.call([msg] * len(self.conns), kind, timeout)

    def wait_done(self, change: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while any((change, i) not in self.done for i in range(len(self.conns))):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for conn in wait(self.conns, left):
                assert isinstance(conn, Connection)
                i = self.conns.index(conn)
                msg = self._handle(i, conn.recv())
                if msg is not None:
                    raise RuntimeError(f"client worker {i}: unexpected {msg[0]!r}")
        return True

    def stop(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("stop",))
            except OSError:
                pass
        for i, proc in enumerate(self.procs):
            try:
                if self.conns[i].poll(10):
                    self.conns[i].recv()
            except (OSError, EOFError):
                pass
            proc.join(10)
            if proc.is_alive():
                proc.kill()  # by PID: only the processes this run started
                proc.join(5)
        for conn in self.conns:
            conn.close()


def fake_key() -> str:
    # The server only checks that the key is 32 bytes of base64; no Curve25519 work needed.
    return base64.b64encode(os.urandom(32)).decode()
