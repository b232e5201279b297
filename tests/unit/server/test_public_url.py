"""`--public-url`: validated, listed after the LAN URLs, and named by the leaf certificate."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcloud.server.config import Listen, Settings
from pcloud.server.security.tls import TlsFiles, ensure_ca, ensure_leaf, leaf_names


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(state_dir=tmp_path, listen=(Listen("192.168.0.111", 8443),), **kw)  # type: ignore[arg-type]


def test_public_url_is_listed_after_the_lan_url_and_in_the_certificate(tmp_path: Path) -> None:
    s = settings(tmp_path, public_url="https://203.0.113.10:8443")
    assert s.server_urls() == ["https://192.168.0.111:8443", "https://203.0.113.10:8443"]
    files = TlsFiles.in_dir(tmp_path)
    ensure_ca(files)
    ensure_leaf(files, settings(tmp_path).cert_names())
    assert "203.0.113.10" not in leaf_names(files)
    # Adding a public URL later re-issues the leaf so that it covers the public host too.
    ensure_leaf(files, s.cert_names())
    assert {"203.0.113.10", "192.168.0.111"} <= leaf_names(files)


def test_public_url_by_name_is_a_dns_san(tmp_path: Path) -> None:
    s = settings(tmp_path, public_url="https://home.example.net:8443")
    assert "home.example.net" in s.cert_names()


@pytest.mark.parametrize(
    "bad",
    ["http://203.0.113.10:8443", "https://203.0.113.10:8443/path", "https://:8443",
     "https://203.0.113.10:99999", "https://u:p@203.0.113.10"],
)  # fmt: skip
def test_bad_public_url_is_refused_with_its_name(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="--public-url"):
        settings(tmp_path, public_url=bad)
