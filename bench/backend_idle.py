"""A real backend idle on its netmap stream: CPU over a window, RSS, and its reconnect time
after a server restart.

    python -m bench.backend_idle [--window 30] [--restarts 3]

Starts a real `pcloud-server` (tests.support.coord.CoordServer, default keep-alive 20 s) and a
real `pcloud-backend --headless` process (driver `fake`: no WireGuard interface, so it runs
unprivileged; the control plane is the real one), waits until it runs and holds its stream,
then reads the backend's CPU time from /proc/PID/stat over `--window` seconds of idling (DESIGN
section 7: no busy polling, CPU ~0; RSS under 80 MB). Then it restarts the server `--restarts`
times and measures, each time, from the new server answering /health until the backend's log
says its stream is open again (target < 2 s). Everything runs on 127.0.0.1; both processes are
stopped by PID and the temp dir removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.procfs import cpu_s, rss_mb
from tests.support.coord import CoordServer

BIN = Path(sys.executable).parent
OPEN_LINE = re.compile(r"netmap stream open to")


def wait_for(cond: object, what: str, timeout: float) -> float:
    start = time.monotonic()
    while not cond():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)  # polling a condition with a deadline
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.backend_idle", description=__doc__)
    p.add_argument("--window", type=float, default=30.0, help="idle seconds measured")
    p.add_argument("--restarts", type=int, default=3, help="server restarts measured")
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="pcloud-idle-"))
    server = CoordServer(tmp / "server")
    backend: subprocess.Popen[bytes] | None = None
    log = tmp / "backend.log"
    try:
        server.start()
        server.admin("users", "create", "bob", "--password-stdin", input="long enough password\n")
        out = server.admin("--json", "auth-keys", "create", "--user", "bob", "--reusable")
        key_file = tmp / "authkey"
        key_file.write_text(json.loads(out.stdout)["key"] + "\n")
        key_file.chmod(0o600)
        (tmp / "empty.toml").write_text("")
        argv_ = [str(BIN / "pcloud-backend"), "--config", str(tmp / "empty.toml")]
        argv_ += ["--state-dir", str(tmp / "backend"), "--socket", str(tmp / "backend.sock")]
        argv_ += ["--driver", "fake", "--hostname", "idle", "--headless"]
        argv_ += ["--server", server.join_link, "--auth-key-file", str(key_file)]
        with open(log, "a") as out_log:
            backend = subprocess.Popen(
                argv_, stdout=out_log, stderr=subprocess.STDOUT, start_new_session=True
            )

        def opened() -> int:
            return len(OPEN_LINE.findall(log.read_text()))

        wait_for(lambda: opened() >= 1, "the backend's stream", 60)
        time.sleep(3)  # let start-up work (endpoint report, first netmap) finish: not measured
        pid = backend.pid
        cpu0, t0 = cpu_s(pid), time.monotonic()
        time.sleep(a.window)  # the measured idle window
        cpu, wall = cpu_s(pid) - cpu0, time.monotonic() - t0
        rss = rss_mb(pid)
        print(
            f"backend idle on its stream: {cpu:.2f} s CPU in {wall:.0f} s "
            f"({cpu / wall * 100:.2f}% of a core), RSS {rss:.0f} MB"
        )
        times = []
        for _ in range(a.restarts):
            before = opened()
            server.restart()  # returns once the new server answers /health
            took = wait_for(lambda before=before: opened() > before, "the stream back", 30)
            times.append(took)
            print(f"server restarted: backend's stream open again {took:.2f} s after /health")
        ok_cpu, ok_rss = cpu / wall < 0.01, rss < 80
        ok_back = bool(times) and max(times) < 2.0
        print(
            f"backend_idle cpu={cpu / wall * 100:.2f}% rss={rss:.0f}MB "
            f"reconnect_max={max(times, default=float('nan')):.2f}s "
            f"[cpu~0 rss<80MB reconnect<2s: {' '.join('PASS' if x else 'MISS' for x in (ok_cpu, ok_rss, ok_back))}]"
        )
        return 0
    except Exception as exc:  # noqa: BLE001 - the run failed: say why, exit non-zero
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if log.exists():
            print(log.read_text()[-2000:], file=sys.stderr)
        return 1
    finally:
        if backend is not None and backend.poll() is None:
            os.kill(backend.pid, signal.SIGTERM)  # by PID: the process this run started
            try:
                backend.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(backend.pid, signal.SIGKILL)
                backend.wait()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
