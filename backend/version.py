"""The installed package's version, for `pcloud --version` and `pcloud-backend --version`."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    """The version pip installed (pyproject.toml's), or "unknown" when run from a bare tree."""
    try:
        return version("pcloud")
    except PackageNotFoundError:
        return "unknown"
