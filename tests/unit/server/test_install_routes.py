"""GET /install.sh and GET /packages/NAME: the script carries this server's leaf key pin and
join link; only plain .deb names from the packages directory are served."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pcloud.server.api.install import install_line, render_script
from pcloud.server.app import create_app
from pcloud.server.config import Listen, Settings
from pcloud.server.security.tls import TlsFiles, fingerprint, spki_pin


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    packages = tmp_path / "packages"
    packages.mkdir()
    (packages / "pcloud_0.1.0_arm64.deb").write_bytes(b"!<arch>\nfake deb")
    (tmp_path / "secret.deb").write_bytes(b"outside")
    settings = Settings(
        state_dir=tmp_path / "server", listen=(Listen("192.0.2.7", 8443),), packages_dir=packages
    )
    return TestClient(create_app(settings))


def test_install_script_carries_the_leaf_pin_and_join_link(
    client: TestClient, tmp_path: Path
) -> None:
    r = client.get("/install.sh")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/x-shellscript")
    tls = TlsFiles.in_dir(tmp_path / "server")
    pin = spki_pin(tls.cert.read_bytes())
    assert pin != spki_pin(tls.ca_cert.read_bytes())  # the server's own key, not the CA's
    assert f"PIN='{pin}'" in r.text
    assert "BASE='https://192.0.2.7:8443'" in r.text
    fp = fingerprint(tls.ca_cert.read_bytes())
    assert f"JOIN_LINK='https://192.0.2.7:8443/#fp=sha256:{fp}'" in r.text
    assert re.search(r"VERSION='\d+\.\d+\.\d+'", r.text)
    for placeholder in ("@BASE@", "@PIN@", "@JOIN_LINK@", "@VERSION@"):
        assert placeholder not in r.text
    line = install_line("https://192.0.2.7:8443", pin)
    assert line.startswith(f"curl -fsSLk --pinnedpubkey {pin} https://192.0.2.7:8443/install.sh")


def test_packages_serves_only_plain_deb_names(client: TestClient) -> None:
    r = client.get("/packages/pcloud_0.1.0_arm64.deb")
    assert r.status_code == 200 and r.content == b"!<arch>\nfake deb"
    r = client.get("/packages/pcloud_0.1.0_amd64.deb")
    assert r.status_code == 404 and "no package pcloud_0.1.0_amd64.deb" in r.text
    for bad in (
        ".hidden_1_all.deb",
        "pcloud_0.1.0_arm64.tar",
        "..%2Fsecret.deb",
        "pcloud_0.1.0_arm64.deb%00.txt",
    ):
        r = client.get(f"/packages/{bad}")
        assert r.status_code in (400, 404), (bad, r.status_code)
        assert r.status_code == 400 or "no package" not in r.text
    r = client.get("/packages/..%2Fsecret.deb")
    assert b"outside" not in r.content


def test_unsafe_values_never_reach_the_script() -> None:
    with pytest.raises(ValueError):
        render_script(
            "https://x:8443'; rm -rf / #", "sha256//abc=", "https://x/#fp=sha256:00", "0.1.0"
        )


def test_install_details_give_the_line_and_the_served_packages(
    client: TestClient, tmp_path: Path
) -> None:
    (tmp_path / "packages" / "notes.txt").write_text("not a package")
    (tmp_path / "packages" / ".hidden_1_all.deb").write_bytes(b"")
    r = client.get("/api/v1/install")
    assert r.status_code == 200, r.text
    info = r.json()
    pin = spki_pin(TlsFiles.in_dir(tmp_path / "server").cert.read_bytes())
    assert info["line"] == install_line("https://192.0.2.7:8443", pin)
    assert info["pin"] == pin and info["base_url"] == "https://192.0.2.7:8443"
    assert info["packages"] == ["pcloud_0.1.0_arm64.deb"]  # no hidden or non-.deb names
