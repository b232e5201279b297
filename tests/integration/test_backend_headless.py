"""`pcloud-backend --headless` as a real process against the real coordination server, driven by
the real `pcloud` CLI: boot-time login with a pre-auth key file, status/ip/peers output, a
restart that comes back up without logging in again, and no secret in the log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.coord import CoordServer

BIN = Path(sys.executable).parent


@pytest.fixture
def auth_key(coord: CoordServer) -> str:
    coord.admin("users", "create", "bob", "--password-stdin", input="long enough password\n")
    out = coord.admin("--json", "auth-keys", "create", "--user", "bob", "--reusable")
    key: str = json.loads(out.stdout)["key"]
    return key


class BackendProcess:
    def __init__(self, root: Path, name: str, *extra: str) -> None:
        self.root, self.name, self.extra = root, name, extra
        self.socket = root / f"{name}.sock"
        self.log = root / f"{name}.log"
        (root / "empty.toml").write_text("")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BackendProcess:
        argv = [
            str(BIN / "pcloud-backend"),
            "--config",
            str(self.root / "empty.toml"),
            "--state-dir",
            str(self.root / self.name),
            "--socket",
            str(self.socket),
            "--driver",
            "fake",
            "--hostname",
            self.name,
            *self.extra,
        ]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "pcloud"), "--socket", str(self.socket), *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def wait_state(self, state: str, timeout: float = 30) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            out = self.cli("status", "--json")
            if out.returncode == 0:
                last = json.loads(out.stdout)
                if last["state"] == state:
                    return last  # type: ignore[no-any-return]
            assert self.proc and self.proc.poll() is None, self.log.read_text()
            time.sleep(0.1)
        raise TimeoutError(
            f"{self.name} never reached {state} (last {last}): {self.log.read_text()[-2000:]}"
        )


@pytest.fixture
def procs() -> Iterator[list[BackendProcess]]:
    started: list[BackendProcess] = []
    yield started
    for p in started:
        p.stop()


def test_headless_login_cli_and_restart(
    coord: CoordServer, auth_key: str, tmp_path: Path, procs: list[BackendProcess]
) -> None:
    key_file = tmp_path / "authkey"
    key_file.write_text(auth_key + "\n")
    key_file.chmod(0o600)
    pi = BackendProcess(
        tmp_path,
        "rpi111",
        "--headless",
        "--server",
        coord.join_link,
        "--auth-key-file",
        str(key_file),
    ).start()
    procs.append(pi)
    status = pi.wait_state("Running")
    me = status["self"]
    assert isinstance(me, dict) and me["hostname"] == "rpi111"

    laptop = BackendProcess(tmp_path, "laptop").start()
    procs.append(laptop)
    laptop.wait_state("NeedsLogin")
    login = subprocess.run(
        [
            str(BIN / "pcloud"),
            "--socket",
            str(laptop.socket),
            "login",
            coord.join_link,
            "--username",
            "bob",
        ],
        input="long enough password\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert login.returncode == 0, login.stderr
    assert login.stdout.startswith("Logged in: this device is 10.0.0.")

    ip = laptop.cli("ip")
    assert ip.returncode == 0 and ip.stdout.strip().startswith("10.0.0.")

    deadline = time.monotonic() + 20
    while "rpi111" not in (table := laptop.cli("status")).stdout:
        assert time.monotonic() < deadline, table
        time.sleep(0.1)
    assert table.returncode == 0
    lines = [line.split() for line in table.stdout.splitlines()]
    assert lines[0][:4] == [ip.stdout.strip(), "laptop.pcloud.internal", "bob", "client"]
    assert lines[1][1:4] == ["rpi111.pcloud.internal", "bob", "client"]
    peers = laptop.cli("peers")
    assert peers.returncode == 0 and "rpi111" in peers.stdout and "laptop" not in peers.stdout

    down = laptop.cli("down")
    assert down.returncode == 0 and "Stopped" in down.stdout
    st = laptop.cli("status")
    assert st.returncode == 1 and "pcloud up" in st.stdout
    assert laptop.cli("peers").returncode == 1
    assert laptop.cli("up").returncode == 0
    laptop.wait_state("Running")

    # A restart of the headless device: up again from its state dir, no new login.
    before = pi.cli("ip").stdout
    pi.stop()
    pi.start()
    pi.wait_state("Running")
    assert pi.cli("ip").stdout == before
    log = pi.log.read_text() + laptop.log.read_text()
    assert auth_key not in log and "long enough password" not in log
    private = (tmp_path / "rpi111" / "private.key").read_text().strip()
    assert private not in log
