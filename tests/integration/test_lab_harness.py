"""Tests of the lab harness itself (tests/lab): topology, mount privacy, per-host WireGuard
sockets, process bookkeeping, teardown on errors and signals, address moves, NAT, the cleanup,
shell and down commands. Each runs in a few hundred milliseconds."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# pytest imports this file by its directory (tests/integration has no __init__.py), so the
# repository root is not necessarily importable; `tests.lab` lives there.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.lab import (  # noqa: E402
    Host,
    Lab,
    Proc,
    WaitTimeout,
    async_wait_for,
    netns,
    unavailable_reason,
    wait_for,
)

# Provides the `lab` fixture (a plugin rather than an import, so the fixture name is not shadowed).
pytest_plugins = ["tests.lab.fixtures"]

WG_ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}


def ping(host: Host, ip: str) -> bool:
    """One ICMP echo with a 1 s deadline; True when answered."""
    return host.run(["ping", "-c1", "-W1", ip], check=False).returncode == 0


def skip_unless_lab_possible() -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)


def pid_exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def lab_namespaces(run_id: str) -> list[str]:
    return netns.list_names(f"pcl-{run_id}-")


def root_addresses() -> str:
    return subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout


# ------------------------------------------------------------------ pure helpers (no root)


def test_wait_for_reports_what_and_last_value() -> None:
    with pytest.raises(WaitTimeout) as err:
        wait_for(lambda: 0, timeout=0.2, what="the answer")
    assert "the answer" in str(err.value) and "last value: 0" in str(err.value)

    def boom() -> bool:
        raise ConnectionRefusedError("not listening")

    with pytest.raises(WaitTimeout, match="not listening"):
        wait_for(boom, timeout=0.1, what="socket")
    calls = iter([None, None, "ready"])
    assert wait_for(lambda: next(calls), timeout=2, interval=0.01) == "ready"


async def test_async_wait_for_accepts_sync_and_async_predicates() -> None:
    calls = iter([False, True])

    async def check() -> bool:
        return next(calls)

    assert await async_wait_for(check, timeout=2, interval=0.01) is True
    with pytest.raises(WaitTimeout, match="never"):
        await async_wait_for(lambda: False, timeout=0.1, what="never")


# ------------------------------------------------------------------ lab


@pytest.mark.lab
def test_two_hosts_ping_over_the_bridge(lab: Lab) -> None:
    a, b = lab.add_host("rpi111"), lab.add_host("rpi112")
    laptop = lab.add_host("laptop")
    assert (a.ip, b.ip) == ("192.168.0.111", "192.168.0.112")
    assert laptop.ip not in (a.ip, b.ip) and laptop.ip.startswith("192.168.0.")
    assert ping(a, b.ip) and ping(b, a.ip) and ping(laptop, a.ip)
    assert ping(a, "192.168.0.200") is False  # nobody there: the ping helper can fail
    eth0 = a.run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
    assert "192.168.0.111/24" in eth0
    assert a.run(["hostname"]).stdout.strip() == "rpi111"
    # Nothing of the lab is configured in the root namespace.
    assert "192.168.0." not in root_addresses()


@pytest.mark.lab
def test_private_mounts_are_per_host(lab: Lab) -> None:
    a, b = lab.add_host("rpi111"), lab.add_host("rpi112")
    marker = f"from-a-{lab.run_id}"
    for d in ("/run/pcloud", "/var/lib/pcloud", "/etc/pcloud", "/etc/rancher"):
        a.run(["sh", "-c", f"echo {marker} > {d}/probe"])
        assert a.path(f"{d}/probe").read_text().strip() == marker  # readable from outside
        assert b.run(["test", "-e", f"{d}/probe"], check=False).returncode == 1
        assert not Path(d, "probe").exists()  # not on the machine's real path
    # Written from outside through host.path, seen inside the host only.
    b.path("/etc/pcloud/config.json").write_text("{}")
    assert b.run(["cat", "/etc/pcloud/config.json"]).stdout == "{}"
    assert a.run(["test", "-e", "/etc/pcloud/config.json"], check=False).returncode == 1
    # The bind mounts exist only in the hosts' mount namespaces.
    assert str(lab.workdir) not in Path("/proc/self/mountinfo").read_text()
    assert str(a.root) in a.run(["cat", "/proc/self/mountinfo"]).stdout
    # /sys shows the host's network namespace (wireguard-go and pyroute2 rely on it).
    assert sorted(a.run(["ls", "/sys/class/net"]).stdout.split()) == ["eth0", "lo"]
    links = a.run(
        [
            sys.executable,
            "-c",
            "from pyroute2 import IPRoute\n"
            "print(*sorted(l.get_attr('IFLA_IFNAME') for l in IPRoute().get_links()))",
        ]
    )
    assert links.stdout.split() == ["eth0", "lo"]
    with pytest.raises(ValueError):
        a.path("/etc/passwd")


@pytest.mark.lab
def test_wireguard_sockets_are_per_host(lab: Lab) -> None:
    hosts = [lab.add_host("rpi111"), lab.add_host("rpi112")]
    procs = [h.spawn("wireguard-go", ["wireguard-go", "-f", "wg0"], env=WG_ENV) for h in hosts]
    socks = [h.path("/var/run/wireguard/wg0.sock") for h in hosts]
    for sock, proc in zip(socks, procs, strict=True):

        def listening(sock: Path = sock, proc: Proc = proc) -> bool:
            return sock.exists() or not proc.alive  # a crash ends the wait early

        wait_for(listening, timeout=10, what=str(sock))
        assert proc.alive, proc.log_text()
    assert socks[0] != socks[1]
    assert not Path("/run/wireguard/wg0.sock").exists()
    for h in hosts:
        # `wg` finds the UAPI socket at the standard path inside each host.
        h.run(["wg", "set", "wg0", "listen-port", str(51000 + int(h.ip.rsplit(".", 1)[1]))])
    ports = [h.run(["wg", "show", "wg0", "listen-port"]).stdout.strip() for h in hosts]
    assert ports == ["51111", "51112"]
    for p in procs:
        p.stop()
    assert not any(p.alive for p in procs)


@pytest.mark.lab
def test_spawn_and_stop_by_pid_leave_no_process(lab: Lab) -> None:
    h = lab.add_host("rpi111")
    plain = h.spawn("sleep", ["sleep", "1000"])
    # A process that forks a child: stopping must take the child too (process group).
    forking = h.spawn("forker", ["sh", "-c", "sleep 1000 & echo child=$!; wait"])
    found = wait_for(lambda: re.search(r"^child=(\d+)$", forking.log_text(), re.M),
                     timeout=5, what="forked child pid")  # fmt: skip
    assert found is not None
    child = int(found.group(1))
    assert plain.alive and pid_exists(child)
    assert set(netns.pids(h.ns)) >= {plain.pid, forking.pid, child}
    plain.stop(timeout=2)
    forking.stop(timeout=2)
    assert not plain.alive and not forking.alive
    assert not any(pid_exists(p) for p in (plain.pid, forking.pid, child))
    assert netns.pids(h.ns) == [h.holder_pid]
    assert "$ nsenter" in plain.log_text()  # the log records what was run


@pytest.mark.lab
def test_exception_in_with_block_removes_everything(tmp_path: Path) -> None:
    skip_unless_lab_possible()
    with pytest.raises(RuntimeError, match="boom") as err:
        with Lab(base_dir=tmp_path) as lab:
            run_id = lab.run_id
            a = lab.add_host("rpi111")
            lab.add_host("laptop", behind_nat=True)
            talker = a.spawn("talker", ["sh", "-c", "echo marker-$$; exec sleep 1000"])
            wait_for(lambda: "marker-" in talker.log_text(), timeout=5, what="talker output")
            # A daemon that left our process group (as `wireguard-go` without -f does) is still
            # found at teardown through its network namespace.
            daemon = a.spawn("daemon", ["sh", "-c", "setsid sleep 1000 & echo pid=$!"])
            found = wait_for(lambda: re.search(r"^pid=(\d+)$", daemon.log_text(), re.M),
                             timeout=5, what="daemon pid")  # fmt: skip
            assert found is not None
            pids = [talker.pid, int(found.group(1)), *(h.holder_pid for h in lab.hosts.values())]
            assert lab_namespaces(run_id)
            raise RuntimeError("boom")
    assert lab_namespaces(run_id) == []
    assert not any(pid_exists(p) for p in pids)
    notes = "\n".join(getattr(err.value, "__notes__", []))
    assert f"marker-{talker.pid}" in notes  # the failure carries each process's log tail
    assert talker.log_path.exists()  # logs are kept after teardown


SIGNAL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from tests.lab import Lab
    with Lab(base_dir={base!r}) as lab:
        h = lab.add_host("rpi111")
        p = h.spawn("sleep", ["sleep", "1000"])
        print(lab.run_id, p.pid, h.holder_pid, flush=True)
        time.sleep(60)
    """
)


@pytest.mark.lab
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_tears_the_lab_down(tmp_path: Path, sig: signal.Signals) -> None:
    skip_unless_lab_possible()
    script = SIGNAL_SCRIPT.format(repo=str(REPO), base=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        run_id, *pid_texts = child.stdout.readline().split()  # blocks until the lab is up
        pids = [int(p) for p in pid_texts]
        assert lab_namespaces(run_id) and all(pid_exists(p) for p in pids)
        child.send_signal(sig)
        child.wait(timeout=20)
        assert child.returncode != 0  # the signal still ends the program
        assert lab_namespaces(run_id) == []
        assert not any(pid_exists(p) for p in pids)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if "run_id" in locals():
            netns.delete_all(lab_namespaces(run_id))


@pytest.mark.lab
def test_set_lan_address_moves_connectivity(lab: Lab) -> None:
    a, b = lab.add_host("rpi111"), lab.add_host("rpi112")
    assert ping(a, "192.168.0.112")
    b.set_lan_address("192.168.0.150")
    assert b.ip == "192.168.0.150"
    assert "192.168.0.150/24" in b.run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
    assert ping(a, "192.168.0.150") and ping(b, a.ip)
    assert not ping(a, "192.168.0.112")
    with pytest.raises(Exception, match="already belongs"):
        b.set_lan_address(a.ip)


@pytest.mark.lab
def test_nat_host_reaches_lan_but_not_the_reverse(lab: Lab) -> None:
    server = lab.add_host("rpi111")
    laptop = lab.add_host("laptop", behind_nat=True)
    assert laptop.behind_nat and not laptop.ip.startswith("192.168.0.")
    assert laptop.public_ip.startswith("192.168.0.")
    # rpi111 has no route to the private subnet: the echo reply only finds its way back because
    # the router masquerades the laptop behind its LAN address.
    assert ping(laptop, server.ip)
    assert not ping(server, laptop.ip)
    assert ping(server, laptop.public_ip)  # the router itself answers
    old = laptop.public_ip
    laptop.set_lan_address("192.168.0.77")  # the NAT's public address changes
    assert laptop.public_ip == "192.168.0.77" and not ping(server, old)
    assert ping(laptop, server.ip) and ping(server, "192.168.0.77")


@pytest.mark.lab
def test_cleanup_removes_a_leaked_namespace() -> None:
    skip_unless_lab_possible()
    run_id = f"t{os.getpid() % 10000}"
    ns = f"pcl-{run_id}-leak"
    netns.add(ns)
    leaked = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "1000"], start_new_session=True)
    try:
        wait_for(lambda: leaked.pid in netns.pids(ns), timeout=5, what="leaked process in ns")
        out = subprocess.run(
            [sys.executable, "-m", "tests.lab.cleanup", "--run", run_id],
            cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        assert f"deleted namespace {ns}" in out
        assert f"pid {leaked.pid}" in out
        assert leaked.wait(timeout=5) != 0
        assert ns not in netns.list_names()
    finally:
        if leaked.poll() is None:
            leaked.kill()
            leaked.wait()
        netns.delete(ns)


@pytest.mark.lab
def test_keep_then_shell_then_down(tmp_path: Path) -> None:
    skip_unless_lab_possible()
    with Lab(base_dir=tmp_path, keep=True) as lab:
        run_id = lab.run_id
        h = lab.add_host("rpi112")
        sleeper = h.spawn("sleep", ["sleep", "1000"])
    state_file = tmp_path / "current.json"
    try:
        assert state_file.exists() and pid_exists(sleeper.pid) and lab_namespaces(run_id)
        tool = [sys.executable, "-m"]
        shell = subprocess.run(
            [*tool, "tests.lab.shell", "--state", str(state_file), "rpi112", "ip", "-o", "-4",
             "addr", "show", "dev", "eth0"],
            cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert "192.168.0.112/24" in shell.stdout
        down = subprocess.run(
            [*tool, "tests.lab.down", "--state", str(state_file)],
            cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert f"pid {sleeper.pid}" in down.stdout
        assert lab_namespaces(run_id) == []
        assert not pid_exists(sleeper.pid) and not state_file.exists()
    finally:
        netns.delete_all(lab_namespaces(run_id))
