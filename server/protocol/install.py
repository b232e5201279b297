"""Wire model of `GET /api/v1/install`: what a new device needs to install PCloud from this
server (its one-line install and the packages it serves)."""

from __future__ import annotations

from pydantic import BaseModel


class InstallInfo(BaseModel):
    """This server's one-line install, with `pk_...` where the pre-auth key goes."""

    line: str
    base_url: str
    pin: str  # curl's --pinnedpubkey value for this server's TLS key
    join_link: str
    version: str
    packages: list[str]  # the .deb files it serves (none: nothing to install from it yet)
