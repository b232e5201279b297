"""A clean Debian 12 root for package tests: a minbase bookworm tree from mmdebstrap (its tarball
cached in $PCLOUD_TEST_CACHE), commands run chrooted in it (on this machine's network for apt, or
inside a lab host), and what its files say (dpkg's lists, systemd's view of a unit).
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.lab import Host
from tests.support.debs import CACHE, REPO

MIRRORS = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
]
# What runs inside the Debian root sees only its own programs.
ROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    # wireguard-go refuses to run where the kernel module exists unless told otherwise.
    "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1",
}


def base_tarball() -> Path:
    """A minbase bookworm root (plus curl for the one-line install), apt lists kept."""
    tar = CACHE / "bookworm-minbase.tar"
    if not tar.exists():
        if shutil.which("mmdebstrap") is None:
            pytest.skip("needs mmdebstrap (bash .ci/setup installs it)")
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = tar.with_suffix(".tmp.tar")
        res = subprocess.run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--mode=root",
                "--include=curl,ca-certificates",
                "--skip=cleanup/apt/lists",
                '--aptopt=Acquire::Check-Valid-Until "false"',
                "bookworm",
                str(tmp),
                *MIRRORS,
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        tmp.rename(tar)
    return tar


def make_root(into: Path) -> Path:
    into.mkdir()
    with tarfile.open(base_tarball()) as tf:
        tf.extractall(into, filter="fully_trusted")
    (into / "etc/resolv.conf").unlink(missing_ok=True)
    (into / "etc/resolv.conf").touch()
    return into


def in_root(root: Path, *cmd: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `cmd` chrooted in `root` on this machine's network (apt reaches Debian's mirror),
    in a private mount namespace that vanishes with it; apt's archives are cached."""
    archives = CACHE / "apt-archives"
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    script = "\n".join(
        [
            "set -e",
            f"mount --rbind /dev {root}/dev",
            f"mount -t proc proc {root}/proc",
            f"mount --bind {archives} {root}/var/cache/apt/archives",
            f"mount --bind /etc/resolv.conf {root}/etc/resolv.conf",
            f'exec chroot {root} "$@"',
        ]
    )
    return subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--fork",
            "sh",
            "-c",
            script,
            "sh",
            *cmd,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ROOT_ENV,
    )


def files_of(root: Path) -> set[str]:
    skip = ("proc/", "sys/", "dev/", "run/", "tmp/")
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not str(p.relative_to(root)).startswith(skip)
    }


def owned_by_packages(root: Path) -> set[str]:
    """Paths in dpkg's file lists, as found on disk (bookworm is merged-/usr: /bin is usr/bin)."""
    owned: set[str] = set()
    for listing in (root / "var/lib/dpkg/info").glob("*.list"):
        for line in listing.read_text().splitlines():
            path = line.lstrip("/")
            head, _, rest = path.partition("/")
            if head in ("bin", "sbin", "lib", "lib64") and (root / head).is_symlink():
                path = f"usr/{head}/{rest}" if rest else f"usr/{head}"
            owned.add(path)
    return owned


def etcd_unit(root: Path) -> str:
    """What systemd would make of Debian's etcd.service in `root` (read from its files)."""
    return subprocess.run(
        ["systemctl", f"--root={root}", "is-enabled", "etcd.service"],
        capture_output=True,
        text=True,
    ).stdout.strip()


def apt_etcd_server(root: Path, action: str) -> None:
    """apt installs or purges etcd-server in `root`; policy-rc.d (Debian's chroot convention)
    makes sure its init script starts no etcd on this machine whatever the unit's state."""
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    try:
        res = in_root(root, "apt-get", action, "-y", "--no-install-recommends", "etcd-server")
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    finally:
        policy.unlink()


def mount_root_in(host: Host, root: Path) -> None:
    """Make `root` usable inside the lab host: its devices, /proc, /sys and a private /run."""
    host.run(
        [
            "sh",
            "-c",
            f"mount --rbind /dev {root}/dev && mount -t proc proc {root}/proc"
            f" && mount --rbind /sys {root}/sys && mount -t tmpfs tmpfs {root}/run"
            f" && mkdir -p {root}/run/lock",
        ]
    )


def share_repo(host: Host, root: Path) -> None:
    """This checkout, read-only at the same path inside `root` (in `host`'s mounts only): the
    K3s stand-in's wrapper runs it from there with the package's Python."""
    inside = root / str(REPO).lstrip("/")
    inside.mkdir(parents=True, exist_ok=True)
    host.run(
        [
            "sh",
            "-c",
            f"mount --bind {REPO} {inside} && mount -o remount,bind,ro {inside}",
        ]
    )


def chroot_run(
    host: Host,
    root: Path,
    *cmd: str,
    check: bool = True,
    timeout: float = 30,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return host.run(
        ["chroot", str(root), *cmd], check=check, timeout=timeout, env={**ROOT_ENV, **(env or {})}
    )
