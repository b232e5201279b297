"""The README's server path, run literally on virtual hosts (issue 18): the commands of "The
first server", "Accounts, keys and devices", "A laptop" and "Policy" are read out of README.md
and run unchanged (less `sudo`: the lab runs as root), in the README's order, with the README's
policy document. Only three things come from the harness: the backends are started by the lab
(the README's `sudo pcloud-backend &`), rpi111's /etc/pcloud/backend.toml points install-server
at the K3s stand-in, and the laptop logs in with the real join link where the README shows a
shortened one."""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from tests.lab import Host, Lab
from tests.lab.mesh import BIN, Mesh
from tests.support.k3s_standin import write_wrapper

pytestmark = pytest.mark.lab
Figure = Callable[..., None]

README = Path(__file__).resolve().parents[2] / "README.md"
README_LINK = "https://192.168.0.111:8443/#fp=sha256:2f1c..."
PASSWORDS = {"admin": "admin-password", "alice": "alice-password"}
# Started by the lab harness (the README's `sudo pcloud-backend &`), or a GUI.
HARNESS = {"pcloud-backend", "pcloud-gui"}


def block(heading: str, lang: str = "sh") -> str:
    """The first ```lang block after the line `heading` in README.md."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, start)
    assert m, f"no {lang} block under {heading!r}"
    return m.group(1)


def commands(heading: str) -> list[list[str]]:
    """The block's commands as argv (comments and `sudo` dropped, harness lines skipped)."""
    out = []
    for line in block(heading).splitlines():
        argv = shlex.split(line, comments=True)
        if argv and argv[0] == "sudo":
            argv = argv[1:]
        if argv and argv[0] not in HARNESS:
            assert argv[0] in ("pcloud", "pcloud-server"), line
            out.append(argv)
    return out


def run(host: Host, argv: list[str], *, link: str = "") -> CompletedProcess[str]:
    """One README command inside `host`, from /etc/pcloud (where policy.hujson is)."""
    real = [str(BIN / argv[0]), *(link if a == README_LINK else a for a in argv[1:])]
    user = argv[argv.index("--username") + 1] if "--username" in argv else None
    if "users" in argv and "create" in argv:
        user = argv[argv.index("create") + 1]
    elif "--admin-user" in argv:
        user = argv[argv.index("--admin-user") + 1]
    stdin = PASSWORDS[user] + "\n" if user else None
    # nsenter resolves --wd before entering the host: name the private dir's real path.
    cwd = str(host.path("/etc/pcloud"))
    res = host.run(real, input=stdin, check=False, timeout=240, cwd=cwd)
    assert res.returncode == 0, f"{shlex.join(argv)}: {res.stderr}{res.stdout}"
    return res


def test_readme_server_path_literally(lab: Lab, figure: Figure) -> None:
    rpi111, laptop = lab.add_host("rpi111"), lab.add_host("laptop")
    assert rpi111.ip == "192.168.0.111"  # the README's address
    write_wrapper(rpi111.path("/etc/pcloud/k3s"))
    rpi111.path("/etc/pcloud/backend.toml").write_text(
        'k3s_binary = "/etc/pcloud/k3s"\n'
        'system_root = "/var/lib/pcloud/root"\n'
        'service_manager = "child"\n'
    )
    mesh = Mesh(lab)
    for host in (rpi111, laptop):
        mesh.start_backend(host)

    started = time.monotonic()
    (install,) = commands("### The first server")
    out = run(rpi111, install).stdout
    figure("README install-server", time.monotonic() - started)
    assert "✓ first admin" in out and "admin created" in out, out
    found = re.search(r"Join link for the next devices: (https://192\.168\.0\.111:8443/#\S+)", out)
    assert found, out
    link = found.group(1)

    # The README's admin commands, unchanged, find the server install-server made.
    admin = commands("### Accounts, keys and devices (on the server)")
    assert [a[:3] for a in admin] == [
        ["pcloud-server", "admin", "users"],
        ["pcloud-server", "admin", "auth-keys"],
        ["pcloud-server", "admin", "nodes"],
    ]
    outputs = [run(rpi111, argv).stdout for argv in admin]
    assert "created" in outputs[0]
    assert re.match(r"pcak_[0-9a-f]{12}_", outputs[1]), outputs[1]
    assert "rpi111" in outputs[2] and "tag:server" in outputs[2] and "10.0.0.1" in outputs[2]

    for argv in commands("### A laptop"):
        run(laptop, argv, link=link)
    assert "10.0.0.1" in run(laptop, ["pcloud", "status"]).stdout

    # The README's policy: the dry run, then set; the laptop still reaches the server.
    rpi111.path("/etc/pcloud/policy.hujson").write_text(block("## Policy", "hujson"))
    check, apply = commands("## Policy")
    dry = run(rpi111, check).stdout
    assert dry.startswith("ok"), dry
    assert "rpi111 loses" not in dry, dry  # the server keeps every peer it needs
    run(rpi111, apply)
    assert "rpi111" in run(laptop, ["pcloud", "ping", "rpi111"]).stdout
    figure("README server path end to end", time.monotonic() - started)
