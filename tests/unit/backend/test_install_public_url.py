"""`pcloud install-server --public-url`: checked at the local API, passed on to pcloud-server."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pcloud.backend.localapi.schemas import InstallServerRequest
from pcloud.backend.server_supervisor import server_argv


def test_public_url_reaches_the_server_command_line() -> None:
    req = InstallServerRequest(public_url="https://203.0.113.10:8443/")
    assert req.public_url == "https://203.0.113.10:8443"
    argv = server_argv(Path("/s"), "192.168.0.111:8443", "10.0.0.0/24", "rpi111",
                       public_url=req.public_url)  # fmt: skip
    assert argv[-2:] == ["--public-url", "https://203.0.113.10:8443"]
    assert "--public-url" not in server_argv(Path("/s"), "192.168.0.111:8443", "10.0.0.0/24", "x")


def test_a_bad_public_url_is_refused_naming_the_flag() -> None:
    with pytest.raises(ValidationError, match="--public-url"):
        InstallServerRequest(public_url="http://203.0.113.10:8443")
