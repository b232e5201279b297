"""The distribution: every package folder is listed, a wheel and the editable install import as
`pcloud.*` without putting a bare `server`/`backend`/`gui` package on sys.path, and the wheel
holds no test tooling (K3s stand-in, screenshot script)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAPPING = {
    "pcloud.server": "server",
    "pcloud.backend": "backend",
    "pcloud.gui": "gui",
    "pcloud.resources": "resources",
    "pcloud.shared": "shared",
}


def listed_packages() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(data["tool"]["setuptools"]["packages"])


def package_folders() -> set[str]:
    found = set()
    for name, folder in MAPPING.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    return found


def test_every_package_folder_is_listed() -> None:
    assert package_folders() == listed_packages()


def test_editable_install_imports_under_pcloud() -> None:
    code = (
        "import importlib.util, pcloud.server, pcloud.backend, pcloud.gui;"
        "print(importlib.util.find_spec('server'), importlib.util.find_spec('backend'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True
    ).stdout
    assert out.strip() == "None None"


def test_wheel_holds_only_the_pcloud_namespace(tmp_path: Path) -> None:
    # From a copy without build/: setuptools never prunes build/lib, so a module moved out of
    # the product would still ship from a tree that was built before.
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT, src, ignore=skip)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if res.returncode != 0:
        pytest.fail(res.stderr)
    (wheel,) = tmp_path.glob("pcloud-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("pcloud-")}
    assert tops == {"pcloud"}
    assert "pcloud/server/protocol/__init__.py" in names and "pcloud/backend/__init__.py" in names
    assert "pcloud/resources/icons/pcloud-connected.svg" in names
    # Only what users run: the K3s stand-in and the screenshot tool live in tests/support.
    assert [n for n in names if "standin" in n or "screenshots" in n] == []
    assert (
        "pcloud/backend/k3s/flags.json" in names or not (ROOT / "backend/k3s/flags.json").exists()
    )
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    # Import from the wheel's files, with the editable finder of this venv switched off.
    code = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path "
        "if 'editable' not in type(f).__module__ and 'editable' not in repr(f)];"
        f"sys.path.insert(0, {str(target)!r});"
        "import pcloud.server.app, pcloud.backend, pcloud.gui;"
        "print(pcloud.server.app.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True
    ).stdout
    assert out.strip().startswith(str(target))
