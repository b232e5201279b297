"""Unauthenticated one-line install: `GET /install.sh`, `GET /packages/<file>` and the line itself
(`GET /api/v1/install`, which the GUI's admin page shows with a QR code, through the backend).

The server serves its own version's Debian packages from one directory (`--packages DIR`,
default STATE_DIR/packages) and an install script with this server's address, key pin, join link
and version filled in. Both are public: a package holds nothing secret, and the install line's
`--pinnedpubkey` (this server's leaf key) is what makes the download trustworthy. Only plain file
names inside that directory are served: no path, no hidden file, nothing but `.deb`.
"""

from __future__ import annotations

import re
from importlib import metadata
from importlib.resources import files as package_files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, PlainTextResponse

from ..config import Settings
from ..errors import ApiError
from ..protocol import InstallInfo
from ..security.tls import TlsFiles, ensure_leaf, fingerprint, spki_pin

router = APIRouter(tags=["install"])

# Debian file names: package_version_arch.deb; version characters per Debian policy 5.6.12.
_SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9.+-]*_[A-Za-z0-9.+~-]+_[a-z0-9]+\.deb$")


def pcloud_version() -> str:
    """The installed distribution's version (the packages' version too)."""
    try:
        return metadata.version("pcloud")
    except metadata.PackageNotFoundError:
        from .. import __version__

        return __version__


def base_url(settings: Settings) -> str:
    urls = settings.server_urls() or [f"https://{settings.hostname}:{settings.listen[0].port}"]
    return urls[0].rstrip("/")


def install_info(settings: Settings) -> dict[str, str]:
    """Base URL, leaf key pin and join link of this server (from its TLS files)."""
    tls = TlsFiles.in_dir(settings.state_dir)
    ensure_leaf(tls, settings.cert_names())  # a no-op once the server has started
    url = base_url(settings)
    return {
        "base_url": url,
        "pin": spki_pin(tls.cert.read_bytes()),
        "join_link": f"{url}/#fp=sha256:{fingerprint(tls.ca_cert.read_bytes())}",
    }


def install_line(base_url: str, pin: str, auth_key: str = "pk_...") -> str:
    """The command a new device runs (as printed next to the join link)."""
    return (
        f"curl -fsSLk --pinnedpubkey {pin} {base_url}/install.sh"
        f" | sudo sh -s -- --auth-key {auth_key}"
    )


def render_script(base_url: str, pin: str, join_link: str, version: str) -> str:
    template = package_files("pcloud.server").joinpath("install.sh").read_text()
    values = {"@BASE@": base_url, "@PIN@": pin, "@JOIN_LINK@": join_link, "@VERSION@": version}
    for key, value in values.items():
        # Every value lands in single quotes in a shell script: refuse any that could end them.
        if not re.fullmatch(r"[A-Za-z0-9:/.\[\]#=+_~-]+", value):
            raise ValueError(f"unsafe value for {key}: {value!r}")
        template = template.replace(key, value)
    return template


@router.get("/install.sh", response_class=PlainTextResponse)
async def install_script(request: Request) -> PlainTextResponse:
    """This server's install script (base URL, key pin, join link and version filled in)."""
    settings: Settings = request.app.state.settings
    info = install_info(settings)
    return PlainTextResponse(
        render_script(info["base_url"], info["pin"], info["join_link"], pcloud_version()),
        media_type="text/x-shellscript",
    )


@router.get("/packages/{name}")
async def package_file(name: str, request: Request) -> FileResponse:
    """One package file from the packages directory, by its plain name."""
    if not _SAFE_NAME.fullmatch(name):
        raise ApiError(
            400, "bad_package_name", "a package name looks like pcloud_1.2.3_arm64.deb (no paths)"
        )
    settings: Settings = request.app.state.settings
    folder: Path = settings.packages()
    path = folder / name
    if not path.is_file():
        raise ApiError(404, "no_such_package", f"this server has no package {name}")
    return FileResponse(path, media_type="application/vnd.debian.binary-package", filename=name)


@router.get("/api/v1/install", response_model=InstallInfo)
async def install_details(request: Request) -> InstallInfo:
    """The one-line install (with `pk_...` for the key) and the packages this server serves."""
    settings: Settings = request.app.state.settings
    info = install_info(settings)
    folder = settings.packages()
    names = sorted(p.name for p in folder.glob("*.deb") if _SAFE_NAME.fullmatch(p.name))
    return InstallInfo(
        line=install_line(info["base_url"], info["pin"]),
        version=pcloud_version(),
        packages=names,
        **info,
    )
