"""Settings with a fixed set of values (driver, service manager) are checked in the TOML file as
on the command line: a value outside the set is an error naming the setting and the choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcloud.backend.config import ConfigError, load_settings


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "backend.toml"
    path.write_text(text)
    return str(path)


def test_a_known_choice_is_taken(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'driver = "userspace"\nservice_manager = "child"\n')
    settings = load_settings(["--config", cfg])
    assert (settings.driver, settings.service_manager) == ("userspace", "child")
    assert load_settings(["--config", cfg, "--driver", "fake"]).driver == "fake"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('driver = "wireguard"\n', "setting 'driver' must be one of auto, kernel, userspace, fake"),
        ('service_manager = "openrc"\n', "setting 'service_manager' must be one of auto, systemd"),
    ],
)
def test_an_unknown_choice_in_the_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(["--config", write(tmp_path, text)])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('auth_key_fle = "/etc/pcloud/auth-key"\n',
         r"unknown setting 'auth_key_fle' \(did you mean 'auth_key_file'\?\)"),
        ('headless = "yes"\n', "setting 'headless' must be true or false, not str"),
        ('listen_port = "51820"\n', "setting 'listen_port' must be a whole number, not str"),
        ('control_probe_s = "5"\n', "setting 'control_probe_s' must be a number, not str"),
    ],
)  # fmt: skip
def test_a_typo_or_a_wrong_type_says_what_to_write(tmp_path: Path, text: str, message: str) -> None:
    """What a user hit: `auth_key_fle` named no fix, `headless = "yes"` said only 'wrong type'."""
    with pytest.raises(ConfigError, match=message):
        load_settings(["--config", write(tmp_path, text)])
