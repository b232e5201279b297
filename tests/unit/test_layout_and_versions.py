"""One server layout (issue 18): install-server's server dir, `pcloud-server`'s and the admin
CLI's default state dir and the packaged unit are the same place; every program prints the
package version; `pcloud ping -c 0` is refused as usage, not blamed on the tunnel."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from pcloud.backend.config import BackendSettings
from pcloud.backend.server_supervisor import UNIT_TEMPLATE, Services
from pcloud.server import admin, layout
from pcloud.server.arguments import server_parser

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PACKAGED_START = f"/usr/bin/pcloud-server --state-dir {layout.STATE_DIR}"


def test_every_way_to_run_a_server_uses_one_state_dir() -> None:
    backend_default = BackendSettings().state_dir
    assert Services(backend_default, manager="child").server_dir == layout.STATE_DIR
    assert server_parser().parse_args([]).state_dir == layout.STATE_DIR
    assert admin.build_parser().parse_args(["nodes", "list"]).state_dir == layout.STATE_DIR


def test_packaged_unit_is_the_unit_install_server_writes() -> None:
    packaged = (ROOT / "packaging/systemd/pcloud-server.service").read_text()
    assert packaged == UNIT_TEMPLATE.format(exec_start=PACKAGED_START)
    assert "User=" not in packaged  # root, like the backend whose state dir it shares
    sysusers = (ROOT / "packaging/sysusers.d/pcloud.conf").read_text()
    assert "pcloud-server" not in sysusers  # no second server user with its own state dir


@pytest.mark.parametrize(
    "argv",
    [["pcloud"], ["pcloud-backend"], ["pcloud-server"], ["pcloud-server", "admin"]],
)
def test_version_flag_prints_the_package_version(argv: list[str]) -> None:
    res = subprocess.run(
        [str(BIN / argv[0]), *argv[1:], "--version"], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [argv[0], version("pcloud")]


def test_ping_count_zero_is_a_usage_error() -> None:
    res = subprocess.run(
        [str(BIN / "pcloud"), "--socket", "/nonexistent.sock", "ping", "-c", "0", "rpi112"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert res.returncode == 2
    assert "0 echoes: give 1 to 100" in res.stderr and "tunnel" not in res.stderr


def test_readme_backend_toml_is_what_the_backend_reads(tmp_path: Path) -> None:
    import re

    from pcloud.backend.config import ConfigError, load_settings

    readme = (ROOT / "README.md").read_text()
    (toml,) = re.findall(r"```toml\n(.*?)```", readme, re.S)
    path = tmp_path / "backend.toml"
    path.write_text(toml)
    settings = load_settings(["--config", str(path)])
    assert settings.headless is True and settings.driver == "auto"
    assert settings.server and settings.server.startswith("https://192.168.0.111:8443/#fp=")
    assert settings.auth_key_file == Path("/etc/pcloud/auth-key")
    assert settings.hostname == "rpi112"
    # A flag wins over the file; an unknown key is refused by name (as the README says).
    assert load_settings(["--config", str(path), "--hostname", "pi"]).hostname == "pi"
    path.write_text(toml + 'hostnme = "typo"\n')
    with pytest.raises(ConfigError, match="hostnme"):
        load_settings(["--config", str(path)])
