"""The `pcloud` CLI's error paths: no backend, no permission, not logged in, bad usage; against
a real backend process with the fake WireGuard driver."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcloud.backend.cli.main import main

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def backend_socket() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="pcloud-cli-test-"))
    os.chmod(tmp, 0o755)  # other-uid callers must reach the socket
    sock = tmp / "backend.sock"
    (tmp / "backend.toml").write_text("")
    log = open(tmp / "backend.log", "w")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [
            str(BIN / "pcloud-backend"),
            "--config",
            str(tmp / "backend.toml"),
            "--state-dir",
            str(tmp / "state"),
            "--socket",
            str(sock),
            "--driver",
            "fake",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((tmp / "backend.log").read_text())
        time.sleep(0.05)
    try:
        yield sock
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_backend_not_running(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "--socket", str(tmp_path / "nope.sock"), "status")
    assert code == 1 and out == ""
    assert err.startswith("pcloud: the backend is not running")
    assert "sudo systemctl start pcloud-backend" in err
    assert len(err.strip().splitlines()) == 1


def test_no_subcommand_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--socket", "/nonexistent")[0] == 2


def test_status_when_logged_out(capsys: pytest.CaptureFixture[str], backend_socket: Path) -> None:
    code, out, _ = run(capsys, "--socket", str(backend_socket), "status")
    assert code == 1 and "# Logged out: run `pcloud login JOIN-LINK`" in out
    code, out, _ = run(capsys, "--socket", str(backend_socket), "status", "--json")
    assert code == 0
    assert json.loads(out) == {
        "state": "NeedsLogin",
        "self": None,
        "server_url": None,
        "peers": [],
        "error": None,
        "control_unreachable_since": None,
        "nat": None,
        "filter": {"state": "off", "rules": 0, "nft_rules": 0, "reason": None},
    }


@pytest.mark.parametrize(
    "argv", [["up"], ["down"], ["ip"], ["peers"], ["ping", "x"], ["rotate-key"]]
)
def test_commands_needing_login(
    capsys: pytest.CaptureFixture[str], backend_socket: Path, argv: list[str]
) -> None:
    code, out, err = run(capsys, "--socket", str(backend_socket), *argv)
    assert code == 1 and out == ""
    assert err.startswith("pcloud: not logged in") and "pcloud login" in err


def test_login_needs_a_way_to_authenticate(
    capsys: pytest.CaptureFixture[str], backend_socket: Path
) -> None:
    code, _, err = run(capsys, "--socket", str(backend_socket), "login", "https://h:1/")
    assert code == 1 and "--auth-key" in err
    code, _, err = run(
        capsys, "--socket", str(backend_socket), "login", "https://h:1/", "--auth-key", "k"
    )
    assert code == 1 and "fingerprint" in err


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_permission_denied_says_how_to_fix(backend_socket: Path) -> None:
    out = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            str(BIN / "pcloud"),
            "--socket",
            str(backend_socket),
            "up",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "sudo usermod -aG pcloud $USER" in out.stderr


def test_reader_that_leaves_gets_no_traceback(backend_socket: Path) -> None:
    """`pcloud status | head -1`: the pipe closes before the CLI writes; no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = subprocess.run(
            [str(BIN / "pcloud"), "--socket", str(backend_socket), "status"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(write_end)
    assert out.returncode == 128 + signal.SIGPIPE
    assert "Traceback" not in out.stderr, out.stderr
