"""Builds PCloud's Debian packages: `pcloud` and `pcloud-gui` for amd64 and arm64 (into dist/).

Each package holds a self-contained Python environment under /opt/pcloud: a venv made against
Debian 12's /usr/bin/python3.11 (its pyvenv.cfg and every script's shebang point there), whose
site-packages come from the projects' own manylinux wheels for the target architecture
(`pip install --platform ... --only-binary=:all: --target`), so the arm64 package is built on
amd64 without a compiler or an emulator. Both architectures install one lock of exact versions,
resolved once, so their file lists match. The .deb itself is written by `dpkg-deb --build` from a
staging tree; control files and maintainer scripts come from packaging/debian/.

Run it through `bash packaging/build` (or `make dist`); it needs Debian 12's python3.11 and
dpkg-deb, and PyPI (or the machine's pip mirror) for the wheels.
"""

from __future__ import annotations

import argparse
import compileall
import re
import shutil
import sys
import tomllib
from pathlib import Path

# packaging/ is this script's directory, so its sibling imports by name.
from debtree import (
    DEBIAN,
    changelog,
    dpkg_deb,
    glibc_floor,
    install_file,
    installed_size_kib,
    md5sums,
    normalise_tree,
    run,
    write_control,
)

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3.11"
PREFIX = "/opt/pcloud"
SITE = f"{PREFIX}/lib/python3.11/site-packages"
# Where pcloud-gui's wheels go: a .pth file in the main site-packages adds it, so the two
# packages never own the same file.
GUI_SITE = f"{PREFIX}/lib/gui/site-packages"
ARCHES = {"amd64": "x86_64", "arm64": "aarch64"}
# Debian 12 / Raspberry Pi OS bookworm have glibc 2.36: any manylinux tag up to 2_36 runs there.
GLIBC_TAGS = [
    "2014",
    "_2_17",
    "_2_24",
    "_2_26",
    "_2_27",
    "_2_28",
    "_2_31",
    "_2_34",
    "_2_35",
    "_2_36",
]
# The newest PySide6 whose aarch64 wheels need glibc <= 2.36 (6.9+ need 2.39).
GUI_PINS = ["PySide6-Essentials==6.8.0.2", "shiboken6==6.8.0.2"]
COMMANDS = ["pcloud", "pcloud-backend", "pcloud-server"]
GUI_COMMANDS = ["pcloud-gui"]


def version() -> str:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    v: str = data["project"]["version"]
    return v


def pip_platform_args(arch: str) -> list[str]:
    machine = ARCHES[arch]
    args = [
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
        "--abi",
        "abi3",
        "--abi",
        "none",
    ]
    for tag in GLIBC_TAGS:
        args += ["--platform", f"manylinux{tag}_{machine}"]
    return args


def pip(*args: str) -> list[str]:
    # pip of the build machine's Python; its config (mirror, constraints) applies as usual.
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]


def build_wheel(work: Path) -> Path:
    out = work / "wheel"
    shutil.rmtree(out, ignore_errors=True)
    run(pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)))
    (wheel,) = out.glob("pcloud-*.whl")
    return wheel


def resolve_lock(work: Path, wheel: Path, extra: str, arch: str) -> list[str]:
    """Exact `name==version` of every wheel the environment needs (resolved for `arch`)."""
    report = work / f"report-{extra or 'main'}.json"
    target = f"{wheel}[{extra}]" if extra else str(wheel)
    run(
        pip(
            "install",
            "-q",
            "--dry-run",
            "--ignore-installed",
            "--report",
            str(report),
            "--target",
            str(work / "dry"),
            *pip_platform_args(arch),
            target,
            *(GUI_PINS if extra else []),
        )
    )
    import json

    data = json.loads(report.read_text())
    pins = []
    for item in data["install"]:
        meta = item["metadata"]
        if meta["name"].lower() != "pcloud":
            pins.append(f"{meta['name']}=={meta['version']}")
    return sorted(pins, key=str.lower)


def install_site(stage: Path, site: str, arch: str, reqs: list[str]) -> None:
    target = stage / site.lstrip("/")
    run(
        pip(
            "install",
            "-q",
            "--no-deps",
            "--no-compile",
            "--target",
            str(target),
            *pip_platform_args(arch),
            *reqs,
        )
    )


def make_venv(stage: Path) -> None:
    """A venv at /opt/pcloud against /usr/bin/python3.11, created in the staging tree."""
    venv = stage / PREFIX.lstrip("/")
    run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)])
    for name in ("activate", "activate.csh", "activate.fish", "Activate.ps1"):
        (venv / "bin" / name).unlink(missing_ok=True)
    cfg = venv / "pyvenv.cfg"
    cfg.write_text(
        "".join(
            line
            for line in cfg.read_text().splitlines(keepends=True)
            if not line.startswith("command")
        )
    )
    # The venv module links bin/python to the interpreter it ran as; pin it to Debian's path.
    py = venv / "bin" / "python"
    py.unlink()
    py.symlink_to(SYSTEM_PYTHON)


def move_scripts(stage: Path, site: str, keep: list[str]) -> None:
    """pip --target leaves console scripts in SITE/bin with the builder's shebang: move ours
    to /opt/pcloud/bin with the venv's, drop the rest (uvicorn, pygmentize, ...)."""
    bindir = stage / site.lstrip("/") / "bin"
    venv_bin = stage / PREFIX.lstrip("/") / "bin"
    for script in sorted(bindir.iterdir()) if bindir.exists() else []:
        if script.name in keep:
            body = script.read_text().split("\n", 1)[1]
            dest = venv_bin / script.name
            dest.write_text(f"#!{PREFIX}/bin/python\n{body}")
            dest.chmod(0o755)
        script.unlink()
    if bindir.exists():
        bindir.rmdir()


def compile_site(stage: Path, site: str, strict: bool = True) -> None:
    """Bytecode at build time, checked by hash not mtime: Python never writes into /opt at run
    time, so removing the package leaves nothing behind. `strict=False` for wheels that ship
    templates with a .py name that are not Python (PySide6's deploy scripts): those are never
    imported, so no bytecode is ever written for them."""
    real = stage / site.lstrip("/")
    ok = compileall.compile_dir(
        str(real),
        quiet=1 if strict else 2,
        ddir=site,
        workers=1,
        invalidation_mode=compileall.py_compile.PycInvalidationMode.UNCHECKED_HASH,  # type: ignore[attr-defined]
    )
    if not ok and strict:
        sys.exit(f"byte-compiling {site} failed")


def stage_pcloud(work: Path, arch: str, ver: str, wheel: Path, lock: list[str]) -> Path:
    stage = work / f"pcloud-{arch}"
    shutil.rmtree(stage, ignore_errors=True)
    make_venv(stage)
    install_site(stage, SITE, arch, [*lock, str(wheel)])
    move_scripts(stage, SITE, COMMANDS + GUI_COMMANDS)
    # pcloud-gui ships that command; here it would only fail without PySide6.
    (stage / PREFIX.lstrip("/") / "bin" / "pcloud-gui").unlink()
    compile_site(stage, SITE)
    for cmd in COMMANDS:
        link = stage / "usr/bin" / cmd
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"{PREFIX}/bin/{cmd}")
    pk = ROOT / "packaging"
    install_file(
        pk / "systemd/pcloud-backend.service", stage, "/lib/systemd/system/pcloud-backend.service"
    )
    install_file(
        pk / "systemd/pcloud-server.service", stage, "/lib/systemd/system/pcloud-server.service"
    )
    install_file(pk / "sysusers.d/pcloud.conf", stage, "/usr/lib/sysusers.d/pcloud.conf")
    install_file(pk / "tmpfiles.d/pcloud.conf", stage, "/usr/lib/tmpfiles.d/pcloud.conf")
    install_file(pk / "backend.toml", stage, "/etc/pcloud/backend.toml")
    install_file(pk / "debian/copyright", stage, "/usr/share/doc/pcloud/copyright")
    changelog(stage, "pcloud")
    install_file(DEBIAN / "pcloud.lintian-overrides", stage, "/usr/share/lintian/overrides/pcloud")
    write_control(
        stage,
        DEBIAN / "pcloud" / "control",
        {
            "VERSION": ver,
            "ARCH": arch,
            "LIBC": glibc_floor(stage, SITE),
            "SIZE": str(installed_size_kib(stage)),
        },
        ["postinst", "prerm", "postrm", "conffiles"],
    )
    md5sums(stage)
    normalise_tree(stage)
    return stage


def stage_gui(work: Path, arch: str, ver: str, gui_lock: list[str]) -> Path:
    stage = work / f"pcloud-gui-{arch}"
    shutil.rmtree(stage, ignore_errors=True)
    install_site(stage, GUI_SITE, arch, gui_lock)
    shutil.rmtree(stage / GUI_SITE.lstrip("/") / "bin", ignore_errors=True)
    compile_site(stage, GUI_SITE, strict=False)
    pth = stage / SITE.lstrip("/") / "pcloud-gui.pth"
    pth.parent.mkdir(parents=True)
    pth.write_text(GUI_SITE + "\n")
    script = stage / PREFIX.lstrip("/") / "bin" / "pcloud-gui"
    script.parent.mkdir(parents=True)
    script.write_text(
        f"#!{PREFIX}/bin/python\nimport sys\n"
        "from pcloud.gui.__main__ import main\n\nsys.exit(main())\n"
    )
    script.chmod(0o755)
    link = stage / "usr/bin/pcloud-gui"
    link.parent.mkdir(parents=True)
    link.symlink_to(f"{PREFIX}/bin/pcloud-gui")
    xdg, icons = ROOT / "packaging/xdg", ROOT / "resources/icons"
    install_file(xdg / "pcloud.desktop", stage, "/usr/share/applications/pcloud.desktop")
    install_file(
        xdg / "pcloud-gui-autostart.desktop", stage, "/etc/xdg/autostart/pcloud-gui.desktop"
    )
    install_file(icons / "pcloud.svg", stage, "/usr/share/icons/hicolor/scalable/apps/pcloud.svg")
    for state in ("connected", "disconnected", "needs-login", "working", "error"):
        install_file(
            icons / f"pcloud-{state}.svg",
            stage,
            f"/usr/share/icons/hicolor/scalable/status/pcloud-{state}.svg",
        )
    install_file(ROOT / "packaging/debian/copyright", stage, "/usr/share/doc/pcloud-gui/copyright")
    changelog(stage, "pcloud-gui")
    install_file(
        DEBIAN / "pcloud-gui.lintian-overrides", stage, "/usr/share/lintian/overrides/pcloud-gui"
    )
    write_control(
        stage,
        DEBIAN / "pcloud-gui" / "control",
        {
            "VERSION": ver,
            "ARCH": arch,
            "LIBC": glibc_floor(stage, GUI_SITE),
            "SIZE": str(installed_size_kib(stage)),
        },
        ["postrm", "conffiles"],
    )
    md5sums(stage)
    normalise_tree(stage)
    return stage


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="packaging/build", description=__doc__.split("\n")[0])
    p.add_argument(
        "--arch",
        action="append",
        choices=sorted(ARCHES),
        help="architectures to build (default: amd64 and arm64)",
    )
    p.add_argument(
        "--no-gui", action="store_true", help="skip pcloud-gui (its Qt wheels are large)"
    )
    p.add_argument("--out", type=Path, default=ROOT / "dist")
    p.add_argument("--compress", choices=["xz", "gzip"], default="xz")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "debs")
    args = p.parse_args(argv)
    if not Path(SYSTEM_PYTHON).exists():
        sys.exit(f"{SYSTEM_PYTHON} is missing: build on Debian 12 (bookworm)")
    arches = args.arch or ["amd64", "arm64"]
    ver = version()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(args.work)
    # One lock for every architecture, resolved against the first: versions (and so file
    # lists) stay equal; a version without a wheel for another architecture fails loudly.
    lock = resolve_lock(args.work, wheel, "", arches[0])
    (args.work / "lock.txt").write_text("\n".join(lock) + "\n")
    gui_lock: list[str] = []
    if not args.no_gui:
        main_names = {re.split("==", p_)[0].lower() for p_ in lock}
        full = resolve_lock(args.work, wheel, "gui", "arm64")
        gui_lock = [x for x in full if x.split("==")[0].lower() not in main_names]
    for arch in arches:
        stage = stage_pcloud(args.work, arch, ver, wheel, lock)
        dpkg_deb(stage, args.out / f"pcloud_{ver}_{arch}.deb", args.compress)
        if gui_lock:
            stage = stage_gui(args.work, arch, ver, gui_lock)
            dpkg_deb(stage, args.out / f"pcloud-gui_{ver}_{arch}.deb", args.compress)
    print(f"packages in {args.out}:", *sorted(x.name for x in args.out.glob("*.deb")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
