"""`pcloud login` and `pcloud join-server` read a pre-auth key the same way: --auth-key as given,
--auth-key-file stripped of its newline, an unreadable file an error naming it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pcloud.backend.cli.common import CliError
from pcloud.backend.cli.login import auth_key_from


def args(key: str | None = None, path: Path | None = None) -> argparse.Namespace:
    return argparse.Namespace(auth_key=key, auth_key_file=path)


def test_key_from_the_flag_or_the_file(tmp_path: Path) -> None:
    assert auth_key_from(args("pcak-123")) == "pcak-123"
    assert auth_key_from(args()) is None
    path = tmp_path / "authkey"
    path.write_text("pcak-456\n")
    assert auth_key_from(args(path=path)) == "pcak-456"


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(CliError, match=f"cannot read {missing}: No such file or directory"):
        auth_key_from(args(path=missing))
