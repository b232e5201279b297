"""The Debian side of PCloud's package build (packaging/debs.py): a staging tree becomes a .deb.

Files installed into the tree, DEBIAN/control from a template in packaging/debian/, the
changelog, md5sums, one owner, sane modes and one mtime everywhere (so builds repeat), then
`dpkg-deb --build`, Debian's own tool for the archive.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEBIAN = ROOT / "packaging" / "debian"
# Timestamps in the packages (SOURCE_DATE_EPOCH convention): fixed, so builds repeat.
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "1700000000"))


def run(argv: list[str], **kw: object) -> None:
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, **kw)  # type: ignore[call-overload]


def install_file(src: Path, stage: Path, dest: str, mode: int = 0o644) -> None:
    target = stage / dest.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    target.chmod(mode)


def write_control(stage: Path, template: Path, fields: dict[str, str], files: list[str]) -> None:
    ctl = stage / "DEBIAN"
    ctl.mkdir(parents=True, exist_ok=True)
    text = template.read_text()
    for key, value in fields.items():
        text = text.replace(f"@{key}@", value)
    (ctl / "control").write_text(text)
    for name in files:
        src = template.parent / name
        mode = 0o755 if name in ("postinst", "prerm", "postrm", "preinst") else 0o644
        install_file(src, stage, f"/DEBIAN/{name}", mode)


def glibc_floor(stage: Path, site: str) -> str:
    """The oldest glibc every wheel's manylinux tag allows: the package's libc6 dependency."""
    floor = (2, 17)
    for wheel_file in (stage / site.lstrip("/")).glob("*.dist-info/WHEEL"):
        for m in re.finditer(r"manylinux_(\d+)_(\d+)_", wheel_file.read_text()):
            floor = max(floor, (int(m.group(1)), int(m.group(2))))
    return f"libc6 (>= {floor[0]}.{floor[1]})"


def changelog(stage: Path, package: str) -> None:
    """Debian's changelog of a native package, compressed as policy asks (gzip -9n)."""
    target = stage / "usr/share/doc" / package / "changelog.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    data = (DEBIAN / "changelog").read_bytes()
    with (
        open(target, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz,
    ):
        gz.write(data)


def installed_size_kib(stage: Path) -> int:
    total = 0
    for path in stage.rglob("*"):
        if "DEBIAN" in path.relative_to(stage).parts[:1]:
            continue
        if path.is_file() and not path.is_symlink():
            total += (path.stat().st_size + 1023) // 1024
        else:
            total += 1
    return total


def md5sums(stage: Path) -> None:
    lines = []
    for path in sorted(stage.rglob("*")):
        rel = path.relative_to(stage)
        if rel.parts[0] == "DEBIAN" or not path.is_file() or path.is_symlink():
            continue
        lines.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {rel}\n")
    (stage / "DEBIAN" / "md5sums").write_text("".join(lines))


# A shared library's name (libQt6Gui.so.6, libshiboken6.abi3.so.6.8, _pydantic_core....so).
SHARED_LIBRARY = re.compile(r"\.so(\.[0-9]+)*$")


def normalise_tree(stage: Path) -> None:
    """Owner root, sane modes and one mtime everywhere (dpkg-deb --root-owner-group). Shared
    libraries lose the execute bits some wheels give them (Debian policy 8.1: 0644; the loader
    needs only read access)."""
    for path in [stage, *stage.rglob("*")]:
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        elif path.parent.name != "DEBIAN" or path.name in ("control", "md5sums", "conffiles"):
            mode = path.stat().st_mode
            executable = mode & 0o111 and not SHARED_LIBRARY.search(path.name)
            path.chmod(0o755 if executable else 0o644)
    for path in [stage, *stage.rglob("*")]:
        os.utime(path, (EPOCH, EPOCH), follow_symlinks=False)


def dpkg_deb(stage: Path, out: Path, compress: str) -> None:
    # xz is what Debian's own archive uses; gzip -1 is for tests that build and throw away.
    level = "-z6" if compress == "xz" else "-z1"
    run(
        ["dpkg-deb", "--root-owner-group", f"-Z{compress}", level, "--build", str(stage), str(out)],
        env={**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)},
    )
