"""Where a held node's server memory goes: tracemalloc in a real server, per node and per module.

    python -m bench.stream_memory [--nodes 1000] [--users 0] [--mode stream|poll] [--top 12]

Runs the real coordination server (`pcloud.server.__main__.serve`, TLS, the guarded protocol)
in a child process with tracemalloc on, registers `--nodes` nodes over their own TLS
connections (bench.fanout_client workers; all under the admin, or spread over `--users` users
as in bench.server_fanout, which keeps each node's map small), and takes three snapshots: before registration,
after it (each node's records plus its idle keep-alive TLS connection), and with every node
holding its netmap stream (or long poll). It prints the Python heap per node between them,
grouped by module and by allocating line, and the RSS per node (which adds OpenSSL's own
memory, outside tracemalloc's view). Loopback only; the child and workers are stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import shutil
import sys
import tempfile
import threading
import time
import tracemalloc
from multiprocessing.connection import Connection
from pathlib import Path

from tests.support.coord import CoordServer
from tests.support.ports import free_port

from .fanout_client import NodeSpec
from .fanout_run import create_accounts
from .fanout_workers import Workers, fake_key, metric, raise_nofile
from .procfs import rss_mb


def server_main(argv: list[str], ctl: Connection, trace: bool = True) -> None:
    """The child: the real server, with a thread that dumps snapshots on request (without
    tracemalloc, whose own tables add to the RSS: glibc's heap figures instead)."""
    if trace:
        tracemalloc.start()
    from pcloud.server.__main__ import load_settings, serve, server_parser

    settings = load_settings(server_parser().parse_args(argv))

    def listen() -> None:
        while True:
            path = ctl.recv()
            if trace:
                tracemalloc.take_snapshot().dump(path)
            else:
                Path(path).write_text(malloc_figures())
            ctl.send("dumped")

    threading.Thread(target=listen, daemon=True).start()
    asyncio.run(serve(settings))


def malloc_figures() -> str:
    """glibc's heap: bytes in use by malloc'd blocks and free bytes held (mallinfo2)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (n, ctypes.c_size_t)
            for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        ]  # noqa: E501

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    m = libc.mallinfo2()
    return f"malloc in use {(m.uordblks + m.hblkhd) / 2**20:.1f} MB, free in heap {m.fordblks / 2**20:.1f} MB"


def snapshot(ctl: Connection, path: Path) -> tracemalloc.Snapshot | str:
    ctl.send(str(path))
    if not ctl.poll(300) or ctl.recv() != "dumped":
        raise TimeoutError("the server did not dump its snapshot")
    if path.read_bytes()[:6] == b"malloc":
        return path.read_text()
    snap = tracemalloc.Snapshot.load(str(path))
    return snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])


def show(
    title: str, before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int, top: int
) -> None:
    diff = after.compare_to(before, "filename")
    total = sum(d.size_diff for d in diff)
    print(f"\n{title}: {total / n / 1024:.1f} KiB per node of Python heap")
    for d in diff[:top]:
        name = d.traceback[0].filename.split("site-packages/")[-1].split("/wt/stream/")[-1]
        print(f"  {d.size_diff / n:8.0f} B/node  {d.count_diff / n:6.1f} blocks/node  {name}")
    lines = after.compare_to(before, "lineno")
    print("  by line:")
    for d in lines[:top]:
        frame = d.traceback[0]
        name = frame.filename.split("site-packages/")[-1].split("/wt/stream/")[-1]
        print(f"  {d.size_diff / n:8.0f} B/node  {name}:{frame.lineno}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stream_memory", description=__doc__)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--users", type=int, default=0, help="0: every node under the admin")
    p.add_argument("--mode", choices=("stream", "poll"), default="stream")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--no-trace", action="store_true", help="RSS and glibc's figures only")
    a = p.parse_args(argv)
    n = a.nodes
    raise_nofile(n + 1024)
    tmp = Path(tempfile.mkdtemp(prefix="pcloud-mem-"))
    port = free_port()
    state_dir = tmp / "server"
    argv_ = ["--state-dir", str(state_dir), "--listen", f"127.0.0.1:{port}"]
    argv_ += ["--network", "10.0.0.0/16", "--log-level", "warning"]
    argv_ += ["--max-connections-per-source", str(n + 1024), "--offline-grace", "10"]
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=server_main, args=(argv_, child, not a.no_trace), daemon=True)
    workers: Workers | None = None
    try:
        proc.start()
        assert proc.pid is not None
        coord = CoordServer(state_dir, port=port)
        code_file = state_dir / "setup-code"
        deadline = time.monotonic() + 60
        while not code_file.exists() or not (state_dir / "tls" / "ca.pem").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not start")
            time.sleep(0.1)  # polling a condition with a deadline
        time.sleep(1)  # the listening socket comes right after the files
        from pcloud.server.security.tls import fingerprint

        ca = (state_dir / "tls" / "ca.pem").read_bytes()
        coord.join_link = f"{coord.url}/#fp=sha256:{fingerprint(ca)}"
        coord.setup_code = code_file.read_text().strip()
        admin = coord.setup_admin()
        names = [f"user{u}" for u in range(a.users)]
        keys = asyncio.run(create_accounts(coord, admin, names)) if names else {}
        key = coord.auth_key(admin, reusable=True)
        workers = Workers(2)
        specs = [
            NodeSpec(
                i,
                f"m{i}",
                fake_key(),
                [f"198.18.{i // 250}.{i % 250 + 1}:41641"],
                keys[names[i % len(names)]] if names else key,
                None,
            )
            for i in range(n)
        ]
        shares = [specs[0::2], specs[1::2]]
        ca_pem = ca.decode()
        workers.call([("init", "127.0.0.1", port, ca_pem, s, 16) for s in shares], "ready", 60)
        s0 = snapshot(parent, tmp / "s0")
        rss0 = rss_mb(proc.pid)
        workers.broadcast(("register",), "registered", 600)
        s1 = snapshot(parent, tmp / "s1")
        rss1 = rss_mb(proc.pid)
        if a.mode == "stream":
            workers.broadcast(("stream",), "streaming", 30)
        else:
            workers.broadcast(("poll", 55.0), "polling", 30)
        with coord.client(timeout=120) as c:
            deadline = time.monotonic() + 300
            while metric(c, "pcloud_long_polls_waiting") < n:
                if time.monotonic() > deadline:
                    raise TimeoutError("not every node holds its stream")
                time.sleep(0.5)  # polling a condition with a deadline
        time.sleep(2)  # presence churn settles
        s2 = snapshot(parent, tmp / "s2")
        rss2 = rss_mb(proc.pid)
        print(f"{n} nodes, mode {a.mode}: server RSS {rss0:.0f} -> {rss1:.0f} -> {rss2:.0f} MB")
        print(
            f"RSS per node: registered with an idle TLS connection {(rss1 - rss0) * 1024 / n:.1f} "
            f"KiB, plus its {a.mode} {(rss2 - rss1) * 1024 / n:.1f} KiB"
        )
        if isinstance(s0, str):
            print(f"start: {s0}\nregistered: {s1}\nheld: {s2}")
            return 0
        assert isinstance(s1, tracemalloc.Snapshot) and isinstance(s2, tracemalloc.Snapshot)
        show("registered node + idle TLS connection", s0, s1, n, a.top)
        show(f"its held {a.mode}", s1, s2, n, a.top)
        return 0
    finally:
        if workers is not None:
            workers.stop()
        if proc.is_alive():
            proc.terminate()  # by PID: the process this run started
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
