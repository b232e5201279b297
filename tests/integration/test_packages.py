"""The Debian packages, end to end: built by packaging/build, checked (arm64 against amd64, units,
lintian on all four), installed by apt into a clean Debian 12 root (mmdebstrap --variant=minbase),
run from that root in a lab host that joins a lab mesh and pings, purged without leftovers, then
installed again by the server's one-line install with --server-role (pinned download from the lab
server, which `pcloud install-server` made; no internet inside the lab), which ends with
`pcloud join-server`. Debian's etcd.service stays masked whichever of pcloud and etcd-server
comes first.

Slow parts are cached in $PCLOUD_TEST_CACHE (default /var/tmp/pcloud-test-cache): the built
packages (keyed by a hash of the sources), lintian's reports (keyed by each package's hash), the
minbase root tarball and apt's downloaded archives. A first run on a fresh machine builds,
downloads and lints (minutes); a second run reuses all of them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.lab import Host, Lab, wait_for  # noqa: E402
from tests.support.debian_root import (  # noqa: E402
    ROOT_ENV,
    apt_etcd_server,
    chroot_run,
    etcd_unit,
    files_of,
    in_root,
    make_root,
    mount_root_in,
    owned_by_packages,
    share_repo,
)
from tests.support.debs import (  # noqa: E402
    VERSION,
    build_debs,
    deb_fields,
    elf_machine,
    extract,
    lintian,
    normalised_files,
)
from tests.support.k3s_standin import write_wrapper  # noqa: E402

pytest_plugins = ["tests.lab.fixtures"]

BIN = Path(sys.executable).parent
SERVER_DIR = "/var/lib/pcloud/server"
ELF_MACHINE = {"amd64": 62, "arm64": 183}  # e_machine: EM_X86_64, EM_AARCH64
# Real K3s cannot run here: servers get the stand-in (tests/support/k3s_standin), as in the lab.
K3S = "/etc/pcloud/k3s"
K3S_ROOT = "/var/lib/pcloud/root"


@pytest.fixture(scope="module")
def debs() -> Path:
    """dist/ of this source tree's packages (pcloud and pcloud-gui, amd64 and arm64)."""
    return build_debs()


def test_arm64_package_is_aarch64_cp311_and_matches_amd64(debs: Path, tmp_path: Path) -> None:
    amd, arm = debs / f"pcloud_{VERSION}_amd64.deb", debs / f"pcloud_{VERSION}_arm64.deb"
    fa, fb = deb_fields(amd), deb_fields(arm)
    assert fa.pop("Architecture") == "amd64" and fb.pop("Architecture") == "arm64"
    size_a, size_b = int(fa.pop("Installed-Size")), int(fb.pop("Installed-Size"))
    assert abs(size_a - size_b) < size_a * 0.2  # native code differs in size, nothing else
    assert fa == fb
    assert "python3.11" in fa["Depends"] and "wireguard-go" in fa["Depends"]
    assert normalised_files(amd, "amd64") == normalised_files(arm, "arm64")

    tree = extract(arm, tmp_path / "arm64")
    elves = {p: elf_machine(p) for p in tree.rglob("*") if p.is_file() and not p.is_symlink()}
    elves = {p: m for p, m in elves.items() if m is not None}
    assert len(elves) >= 5, "expected native extensions (cryptography, pydantic-core, ...)"
    wrong = [str(p.relative_to(tree)) for p, m in elves.items() if m != ELF_MACHINE["arm64"]]
    assert not wrong, f"not aarch64: {wrong}"
    for so in (p for p in elves if p.name.endswith(".so") and ".cpython-" in p.name):
        assert ".cpython-311-aarch64-linux-gnu.so" in so.name, so.name
    tags: set[str] = set()
    for wheel_file in tree.glob("opt/pcloud/lib/python3.11/site-packages/*.dist-info/WHEEL"):
        tags |= {
            line.split(":", 1)[1].strip()
            for line in wheel_file.read_text().splitlines()
            if line.startswith("Tag:")
        }
    pythons = {t.split("-")[0] for t in tags}
    abis = {t.split("-")[1] for t in tags}
    assert pythons <= {"cp311", "cp39", "cp38", "cp37", "cp36", "py3", "py2.py3"}, pythons
    assert abis <= {"cp311", "abi3", "none"}, abis
    assert all(t.endswith(("aarch64", "any")) for t in tags), tags
    venv = tree / "opt/pcloud"
    assert os.readlink(venv / "bin/python") == "/usr/bin/python3.11"
    assert "home = /usr/bin" in (venv / "pyvenv.cfg").read_text()
    assert (venv / "bin/pcloud-backend").read_text().startswith("#!/opt/pcloud/bin/python\n")


# lintian on four packages, one of them with Qt, takes minutes when nothing is cached.
@pytest.mark.timeout(1800)
def test_units_verify_and_lintian_has_no_errors(debs: Path, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None or shutil.which("lintian") is None:
        pytest.skip("needs systemd-analyze and lintian (bash .ci/setup installs them)")
    tree = extract(debs / f"pcloud_{VERSION}_amd64.deb", tmp_path / "amd64")
    units = sorted(str(p) for p in (tree / "lib/systemd/system").glob("*.service"))
    assert len(units) == 2
    # The package's tree as the root (so ExecStart's /usr/bin/pcloud-* exist), with this
    # machine's own units beside ours for the targets they refer to.
    shutil.copytree(
        "/lib/systemd/system",
        tree / "lib/systemd/system",
        symlinks=True,
        dirs_exist_ok=True,
        ignore=lambda d, names: [n for n in names if n.startswith("pcloud")],
    )
    res = subprocess.run(
        ["systemd-analyze", "verify", f"--root={tree}", *units],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0 and not res.stderr.strip(), res.stdout + res.stderr
    # What postinst runs where systemd does: sysusers.d and tmpfiles.d agree (tmpfiles names
    # only users and groups that sysusers makes), so neither fails the install.
    for name in ("passwd", "group"):
        (tree / "etc" / name).touch()
    for tool in (["systemd-sysusers"], ["systemd-tmpfiles", "--create"]):
        res = subprocess.run(
            [*tool, f"--root={tree}", "pcloud.conf"], capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0, res.stderr
    assert (tree / "var/lib/pcloud").stat().st_mode & 0o777 == 0o700
    assert len(list(debs.glob("*.deb"))) == 4
    # Two at a time (lintian reads one package on one core): half the wall time on 2 cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(lintian, sorted(debs.glob("*.deb"))))
    lines = [line for report in reports for line in report.splitlines()]
    errors = [line for line in lines if line.startswith("E:")]
    assert not errors, errors
    # Every warning left is named in the README, with why it stays.
    readme = (REPO / "README.md").read_text()
    tags = {line.split()[2] for line in lines if line.startswith("W:")}
    unlisted = sorted(t for t in tags if f"`{t}`" not in readme)
    assert not unlisted, f"lintian warnings the README does not list: {unlisted}"


# ----------------------------------------------------------------- the clean Debian root


def ping(host: Host, ip: str) -> bool:
    return host.run(["ping", "-c1", "-W1", ip], check=False).returncode == 0


def start_first_server(host: Host, debs: Path) -> tuple[str, str]:
    """`host` as the network's first server, the README's way: its backend, the packages
    copied into the server's packages directory, `pcloud install-server` (K3s: the stand-in).
    Answers the join link and the one-line install it prints."""
    packages = host.path(f"{SERVER_DIR}/packages")
    packages.mkdir(parents=True)
    for deb in debs.glob("pcloud_*.deb"):
        shutil.copyfile(deb, packages / deb.name)
    write_wrapper(host.path(K3S))
    start_venv_backend(host, "--k3s-root", K3S_ROOT, "--service-manager", "child")
    out = host.run(
        host.pcloud_argv(
            "install-server", "--listen", f"{host.ip}:8443", "--k3s-binary", K3S,
            "--admin-user", "admin",
        ),
        input="correct horse battery\n",
        timeout=240,
    ).stdout  # fmt: skip
    link = re.search(r"Join link for the next devices: (\S+)", out)
    line = re.search(r"One-line install for a new device .*:\n\s*(.+)", out)
    assert link and line, out
    return link.group(1), line.group(1).strip()


def make_key(srv: Host, *flags: str) -> str:
    admin = [str(BIN / "pcloud-server"), "admin", "--state-dir", SERVER_DIR, "--json"]
    out = srv.run([*admin, "auth-keys", "create", "--user", "admin", *flags])
    key: str = json.loads(out.stdout)["key"]
    return key


def start_venv_backend(host: Host, *args: str) -> None:
    host.spawn(
        "backend",
        [str(BIN / "pcloud-backend"), "--driver", "userspace", "--hostname", host.name, *args],
        env=ROOT_ENV,
    )
    wait_for(
        lambda: host.pcloud("status", "--json", check=False).returncode == 0,
        timeout=30,
        what=f"{host.name}'s backend socket",
    )


def root_ip(host: Host, root: Path) -> str:
    out = chroot_run(host, root, "/usr/bin/pcloud", "status", "--json", check=False)
    if out.returncode != 0:
        return ""
    me = json.loads(out.stdout).get("self") or {}
    return str(me.get("address") or "")


@pytest.mark.lab
@pytest.mark.timeout(1200)  # apt and join-server in the chroot; a cold cache downloads too
def test_clean_debian_root_installs_joins_purges_and_one_line_installs(
    lab: Lab, debs: Path, tmp_path: Path
) -> None:
    root = make_root(tmp_path / "root")
    before = files_of(root)
    shutil.copy(debs / f"pcloud_{VERSION}_amd64.deb", root / "tmp/pcloud.deb")
    res = in_root(root, "apt-get", "install", "-y", "--no-install-recommends", "/tmp/pcloud.deb")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (root / "opt/pcloud/bin/pcloud-backend").exists()
    assert "pcloud" in (root / "etc/group").read_text()
    # Debian's etcd.service is masked: no second etcd beside the server's own members.
    assert etcd_unit(root) == "masked"
    version = in_root(root, "/usr/bin/pcloud-server", "--help")
    assert version.returncode == 0, version.stderr

    srv, laptop = lab.add_host("rpi111"), lab.add_host("laptop")
    link, line = start_first_server(srv, debs)
    key = make_key(srv, "--reusable")
    start_venv_backend(laptop)
    laptop.pcloud("login", link, "--auth-key", key)
    laptop_ip = laptop.pcloud("ip").stdout.strip()

    # The root's own backend, headless, in a lab host: joins the mesh and pings.
    device = lab.add_host("device")
    mount_root_in(device, root)
    backend = device.spawn(
        "root-backend",
        [
            "chroot",
            str(root),
            "/usr/bin/pcloud-backend",
            "--headless",
            "--server",
            link,
            "--auth-key",
            key,
            "--driver",
            "userspace",
        ],
        env=ROOT_ENV,
    )
    device_ip = wait_for(lambda: root_ip(device, root), timeout=60, what="device's address")
    wait_for(lambda: ping(laptop, device_ip), timeout=30, what="laptop -> device over WireGuard")
    assert ping(device, laptop_ip)
    backend.stop()

    # remove keeps the state, purge removes it and every file of ours.
    res = in_root(root, "apt-get", "remove", "-y", "pcloud")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (root / "var/lib/pcloud").is_dir() and any((root / "var/lib/pcloud").iterdir())
    assert not (root / "opt/pcloud").exists()
    res = in_root(root, "apt-get", "purge", "-y", "pcloud")
    assert res.returncode == 0, res.stderr[-3000:]
    after = files_of(root)
    ours = sorted(p for p in after if "pcloud" in p)
    assert not ours, ours
    # Everything new is another package's file or apt/dpkg bookkeeping.
    # The dependencies' own maintainer scripts make a few: python3.11 byte-compiles its
    # standard library and makes /usr/local/lib/python3.11 and /var/lib/python; readline-common
    # writes /etc/inputrc.
    bookkeeping = (
        "var/lib/dpkg/",
        "var/lib/apt/",
        "var/cache/",
        "var/log/",
        "var/lib/systemd/deb-systemd-helper",
        "etc/ld.so.cache",
        "usr/lib/python3",
        "usr/local/lib/python3",
        "var/lib/python",
        "etc/inputrc",
    )
    accounts = {f"etc/{n}{s}" for n in ("passwd", "group", "shadow", "gshadow") for s in ("", "-")}
    owned = owned_by_packages(root)
    strays = sorted(
        p
        for p in after - before
        if p not in owned and p not in accounts and not p.startswith(bookkeeping)
    )
    assert not strays, strays[:40]

    # The one-line install, in a second lab host, from the lab server (no internet there).
    second = lab.add_host("device2")
    mount_root_in(second, root)
    ca_pin = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pcloud.server.security.tls import spki_pin;"
            "print(spki_pin(open(sys.argv[1], 'rb').read()))",
            str(srv.path(f"{SERVER_DIR}/tls/ca.pem")),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    pin = re.search(r"--pinnedpubkey (\S+)", line)
    assert pin and pin.group(1) != ca_pin
    wrong = line.replace(pin.group(1), ca_pin).replace("sudo sh", "sh").replace("pk_...", key)
    res = chroot_run(second, root, "sh", "-c", wrong, check=False)
    assert "does not match pinned public key" in res.stderr, res.stderr
    assert in_root(root, "dpkg", "-s", "pcloud").returncode != 0

    # install.sh itself refuses a server whose key is not its pin (its second download).
    script = chroot_run(
        second,
        root,
        "curl",
        "-fsSk",
        "--pinnedpubkey",
        pin.group(1),
        f"{link.split('/#')[0]}/install.sh",
    ).stdout
    (root / "tmp/tampered.sh").write_text(script.replace(pin.group(1), ca_pin))
    res = chroot_run(second, root, "sh", "/tmp/tampered.sh", "--auth-key", key, check=False)
    assert res.returncode != 0 and "its key does not match the pin" in res.stderr, res.stderr

    # etcd-server installed before pcloud (which the one-line install brings): masked.
    apt_etcd_server(root, "install")
    assert etcd_unit(root) == "enabled"  # by its own postinst (no systemd here to start it)

    # --server-role with a server-role key: installs, joins, then `pcloud join-server` (its K3s,
    # the stand-in run by the package's own Python, joins rpi111's over the mesh).
    share_repo(second, root)
    write_wrapper(root / K3S.lstrip("/"), python="/opt/pcloud/bin/python")
    server_key = make_key(srv, "--role", "server")  # single-use: login spends it, as in README
    one_line = line.replace("sudo sh", "sh").replace("pk_...", server_key) + " --server-role"
    res = chroot_run(
        second,
        root,
        "sh",
        "-c",
        one_line,
        timeout=400,
        check=False,
        env={
            "PCLOUD_BACKEND_ARGS": f"--driver userspace --k3s-binary {K3S} --k3s-root {K3S_ROOT}",
            "PCLOUD_APT_OPTIONS": "--no-install-recommends",
        },
    )
    log = root / "var/log/pcloud-backend.log"
    assert res.returncode == 0, (
        res.stderr[-3000:] + res.stdout[-3000:] + (log.read_text()[-3000:] if log.exists() else "")
    )
    assert "pcloud install: done" in res.stdout
    second_ip = wait_for(lambda: root_ip(second, root), timeout=30, what="device2's address")
    wait_for(lambda: ping(laptop, second_ip), timeout=30, what="laptop -> device2")
    assert ping(second, laptop_ip)
    # join-server ran to its end: this device's K3s (the stand-in) joined rpi111's.
    assert f"This device ({second_ip}) is now a server; K3s API https://{second_ip}:6443" in (
        res.stdout
    ), res.stdout[-3000:]
    me = json.loads(chroot_run(second, root, "/usr/bin/pcloud", "status", "--json").stdout)
    assert me["self"]["role"] == "server", me["self"]
    nodes = json.loads(
        srv.run([str(BIN / "pcloud-server"), "admin", "--state-dir", SERVER_DIR, "--json",
                 "nodes", "list"]).stdout
    )  # fmt: skip
    assert {n["address"]: n["role"] for n in nodes}.get(second_ip) == "server", nodes
    assert etcd_unit(root) == "masked"
    # etcd-server installed after pcloud: its postinst enables the unit, which stays masked.
    apt_etcd_server(root, "purge")
    apt_etcd_server(root, "install")
    assert etcd_unit(root) == "masked"
