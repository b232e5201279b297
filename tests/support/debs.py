"""PCloud's Debian packages for tests: built once per source tree by packaging/build and kept in
$PCLOUD_TEST_CACHE (default /var/tmp/pcloud-test-cache), read with dpkg-deb, and linted with
lintian (each report kept by the package's hash). Used by tests/integration/test_packages.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PCLOUD_TEST_CACHE", "/var/tmp/pcloud-test-cache"))
SOURCES = ["pyproject.toml", "packaging", "server", "backend", "gui", "resources", "shared"]
VERSION = "0.1.0"


def source_hash() -> str:
    h = hashlib.sha256()
    for top in SOURCES:
        base = REPO / top
        paths = [base] if base.is_file() else sorted(base.rglob("*"))
        for path in paths:
            if path.is_file() and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def build_debs() -> Path:
    """dist/ of this source tree's packages (pcloud and pcloud-gui, amd64 and arm64), built once
    and cached."""
    out = CACHE / "debs" / source_hash()
    if not (out / f"pcloud-gui_{VERSION}_arm64.deb").exists():
        if shutil.which("dpkg-deb") is None or not Path("/usr/bin/python3.11").exists():
            pytest.skip("building the packages needs Debian 12's dpkg-deb and python3.11")
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        res = subprocess.run(
            [
                "bash",
                str(REPO / "packaging/build"),
                "--compress",
                "gzip",
                "--out",
                str(tmp),
                "--work",
                str(CACHE / "build-work"),
            ],
            capture_output=True,
            text=True,
            timeout=1500,
        )
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        for old in (CACHE / "debs").iterdir():  # keep one source tree's packages only
            if old != tmp:
                shutil.rmtree(old, ignore_errors=True)
        tmp.rename(out)
    return out


def deb_fields(deb: Path) -> dict[str, str]:
    out = subprocess.run(
        ["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    fields: dict[str, str] = {}
    for line in out.splitlines():
        if line[:1] not in (" ", "\t") and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def normalised_files(deb: Path, arch: str) -> list[str]:
    """The file list with the architecture's names (x86_64/aarch64, auditwheel hashes) masked."""
    out = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    names = []
    for line in out.splitlines():
        name = line.split(None, 5)[5].split(" -> ")[0]
        name = name.replace({"amd64": "x86_64", "arm64": "aarch64"}[arch], "ARCH")
        names.append(re.sub(r"-[0-9a-f]{8}\.so", "-HASH.so", name))
    return sorted(names)


def extract(deb: Path, into: Path) -> Path:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return into


def elf_machine(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[18:20], "little")


def lintian(deb: Path) -> str:
    """lintian's report on one package, kept by the package's SHA-256: lintian reads every file
    (a minute or two each on 2 cores), and the builds are reproducible, so a package that did
    not change (pcloud-gui, when only PCloud's code did) is not read again."""
    digest = hashlib.sha256(deb.read_bytes()).hexdigest()[:32]
    report = CACHE / "lintian" / f"{deb.name}.{digest}.txt"
    if not report.exists():
        res = subprocess.run(
            ["lintian", "--tag-display-limit", "0", str(deb)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert res.returncode in (0, 2), res.stderr[-2000:]
        report.parent.mkdir(parents=True, exist_ok=True)
        for old in report.parent.glob(f"{deb.name}.*.txt"):  # earlier builds' reports
            old.unlink()
        report.write_text(res.stdout)
    return report.read_text()
