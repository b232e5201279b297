"""What a server adds to its own record in the store (`server:<hostname>`) about reach: its
public URL (`public`), read back by every server (server/reach/public)."""

from __future__ import annotations

from typing import Any

from ..config import Settings

PUBLIC_FIELD = "public"


def public_record(settings: Settings) -> dict[str, Any]:
    """The fields this server adds to its own record in the store."""
    return {PUBLIC_FIELD: [settings.public_url]} if settings.public_url else {}
