"""The userspace WireGuard driver against a real wireguard-go, in throwaway network namespaces.

Two namespaces (`pcwgt-<id>-a`, `pcwgt-<id>-b`) joined by a veth pair with 192.168.77.1/.2; no
address or route is ever added in the root namespace. Each namespace runs the driver in a
helper process started with `ip netns exec NS python THIS_FILE helper ...` (this file doubles
as the helper, see the bottom): the helper owns the driver, so its supervisor keeps running
between the test's commands, which it takes as JSON lines on stdin.

`ip netns exec` gives every call a fresh mount namespace, and both namespaces use the same
interface name, so each driver gets its own `socket_dir` under tmp_path; the driver starts
wireguard-go with that directory bind-mounted over /var/run/wireguard. Every wireguard-go and
helper is killed by PID and the namespaces are deleted even when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from pcloud.backend.keys import PrivateKey

IFNAME = "pcwgt0"
VENV_PY = sys.executable
THIS = str(Path(__file__).resolve())

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("wireguard-go") is None, reason="wireguard-go not installed"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) not installed"),
    pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="no /dev/net/tun"),
]


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 15.0, step: float = 0.1) -> Any:
    """Poll `cond` until it returns something truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


def netns_inode(ns: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return None


def pids_in_netns(ns: str) -> list[int]:
    """PIDs of processes living in namespace `ns` (everything our tests started there)."""
    ino = netns_inode(ns)
    found = []
    if ino is None:
        return found
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}/ns/net").st_ino == ino:
                    found.append(int(entry))
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie counts as gone.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"
    return True


class Helper:
    """The test's end of one helper process (a driver inside a namespace)."""

    def __init__(
        self, ns: str, socket_dir: Path, started: list[int], kind: str = "userspace"
    ) -> None:
        self.ns = ns
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, VENV_PY, THIS, "helper", IFNAME, str(socket_dir), kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(self.proc.pid)
        self._started = started

    def call(self, op: str, timeout: float = 30.0, **kw: Any) -> Any:
        answer = self.call_raw(op, timeout, **kw)
        if "error" in answer:
            raise AssertionError(f"helper {op} in {self.ns}: {answer['error']}")
        result = answer["result"]
        if isinstance(result, dict) and result.get("pid"):
            self._started.append(int(result["pid"]))
        return result

    def call_raw(self, op: str, timeout: float = 30.0, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"helper in {self.ns} did not answer {op} within {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"helper in {self.ns} died during {op}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def exit(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Lab:
    def __init__(self, tmp: Path) -> None:
        tag = uuid.uuid4().hex[:6]
        self.a, self.b = f"pcwgt-{tag}-a", f"pcwgt-{tag}-b"
        self.sock_a, self.sock_b = tmp / "run-a", tmp / "run-b"
        self.pids: list[int] = []  # every helper and wireguard-go we started
        self.key_a, self.key_b, self.key_c = (PrivateKey.generate() for _ in range(3))

    def setup(self) -> None:
        sh("ip", "netns", "add", self.a)
        sh("ip", "netns", "add", self.b)
        va, vb = f"pcwgt{self.a[6:12]}a", f"pcwgt{self.a[6:12]}b"
        # Created directly inside the namespaces: never a link in the root namespace.
        sh("ip", "link", "add", va, "netns", self.a, "type", "veth", "peer", vb, "netns", self.b)
        for ns, dev, addr in ((self.a, va, "192.168.77.1/24"), (self.b, vb, "192.168.77.2/24")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def teardown(self) -> None:
        for ns in (self.a, self.b):
            for pid in pids_in_netns(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for ns in (self.a, self.b):
            sh("ip", "netns", "del", ns, check=False)

    def helper(self, ns: str, kind: str = "userspace") -> Helper:
        return Helper(ns, self.sock_a if ns == self.a else self.sock_b, self.pids, kind)

    def config(self, side: str, *, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        if side == "a":
            me, peer, addr, port = self.key_a, self.key_b, "10.99.0.1/24", 51820
            peer_ep, peer_ip = "192.168.77.2:51821", "10.99.0.2/32"
        else:
            me, peer, addr, port = self.key_b, self.key_a, "10.99.0.2/24", 51821
            peer_ep, peer_ip = "192.168.77.1:51820", "10.99.0.1/32"
        peers = [{"public_key": peer.public_key(), "allowed_ips": [peer_ip], "endpoint": peer_ep}]
        return {
            "private_key": me.b64(),
            "address": addr,
            "listen_port": port,
            "peers": peers + (extra or []),
            "routes": [],
        }

    def ping(self, ns: str, addr: str) -> bool:
        return (
            sh("ip", "netns", "exec", ns, "ping", "-c1", "-W1", addr, check=False).returncode == 0
        )

    def ifindex(self, ns: str) -> int | None:
        out = sh("ip", "-n", ns, "-j", "link", "show", IFNAME, check=False)
        return int(json.loads(out.stdout)[0]["ifindex"]) if out.returncode == 0 else None


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        lab.setup()
        yield lab
    finally:
        lab.teardown()
    assert not [n for n in sh("ip", "netns", "list").stdout.split() if n in (lab.a, lab.b)]
    wait_for(lambda: not [p for p in lab.pids if pid_alive(p)], "our processes to be gone", 10)


def handshake_of(stats: list[dict[str, Any]], key: str) -> float | None:
    return next(s["last_handshake"] for s in stats if s["public_key"] == key)


def up_pair(lab: Lab, kind: str = "userspace") -> tuple[Helper, Helper]:
    a, b = lab.helper(lab.a, kind), lab.helper(lab.b, kind)
    for h, side in ((a, "a"), (b, "b")):
        h.call("start")
        h.call("apply", config=lab.config(side))
    wait_for(lambda: lab.ping(lab.a, "10.99.0.2"), "ping through the tunnel")
    return a, b


def test_ping_and_incremental_apply_keeps_interface_and_sessions(lab: Lab) -> None:
    a, b = up_pair(lab)
    info = a.call("info")
    assert info["ifindex"] == lab.ifindex(lab.a) and info["listen_port"] == 51820
    assert info["mtu"] == 1387  # veth 1500 - 113 (no default route: largest up link)
    assert os.path.exists(lab.sock_a / f"{IFNAME}.sock")  # socket_dir honoured
    hs = handshake_of(a.call("stats"), lab.key_b.public_key())
    assert hs is not None

    third = {
        "public_key": lab.key_c.public_key(),
        "allowed_ips": ["10.99.0.3/32", "10.98.0.0/16"],
        "endpoint": "192.168.77.3:51820",
        "persistent_keepalive": 0,
    }
    cfg = lab.config("a", extra=[third])
    cfg["routes"] = ["10.98.0.0/16"]
    a.call("apply", config=cfg)
    third["endpoint"] = "192.168.77.4:51999"
    a.call("apply", config=lab.config("a", extra=[third]) | {"routes": ["10.98.0.0/16"]})

    stats = a.call("stats")
    assert {s["public_key"]: s["endpoint"] for s in stats}[lab.key_c.public_key()] == (
        "192.168.77.4:51999"
    )
    assert handshake_of(stats, lab.key_b.public_key()) == hs  # session untouched
    assert lab.ifindex(lab.a) == info["ifindex"]  # never recreated
    assert "10.98.0.0/16 dev pcwgt0" in sh("ip", "-n", lab.a, "route").stdout
    assert lab.ping(lab.a, "10.99.0.2")

    # Removing the third peer and the route again.
    a.call("apply", config=lab.config("a"))
    assert [s["public_key"] for s in a.call("stats")] == [lab.key_b.public_key()]
    assert "10.98.0.0/16" not in sh("ip", "-n", lab.a, "route").stdout
    assert handshake_of(a.call("stats"), lab.key_b.public_key()) == hs

    for h in (a, b):
        h.call("close", remove=True)
        h.exit()
    assert lab.ifindex(lab.a) is None and lab.ifindex(lab.b) is None
    assert not os.path.exists(lab.sock_a / f"{IFNAME}.sock")


def test_supervisor_restarts_killed_wireguard_go_and_reconfigures(lab: Lab) -> None:
    a, b = up_pair(lab)
    old = a.call("info")
    os.kill(old["pid"], signal.SIGKILL)
    wait_for(lambda: not pid_alive(old["pid"]), "the killed wireguard-go to be gone")

    def restarted() -> Any:
        info = a.call("info")
        return info if info["pid"] not in (None, old["pid"]) and info["ifindex"] else None

    new = wait_for(restarted, "the supervisor to restart wireguard-go")
    assert new["ifindex"] != old["ifindex"]  # a new TUN: the old one died with the process
    wait_for(lambda: lab.ping(lab.a, "10.99.0.2"), "ping after the restart")
    events = [e["kind"] for e in a.call("info")["events"]]
    assert events[:1] == ["started"] and "exited" in events and "restarted" in events
    assert [s["public_key"] for s in a.call("stats")] == [lab.key_b.public_key()]
    for h in (a, b):
        h.call("close", remove=True)
        h.exit()


def test_backend_restart_adopts_running_wireguard_go(lab: Lab) -> None:
    a, b = up_pair(lab)
    first = a.call("info")
    hs = handshake_of(a.call("stats"), lab.key_b.public_key())
    a.call("close", remove=False)
    a.exit()  # the "backend" is gone...
    assert pid_alive(first["pid"])  # ...wireguard-go is not
    assert lab.ifindex(lab.a) == first["ifindex"]
    assert lab.ping(lab.a, "10.99.0.2")  # tunnel up with no backend at all

    a2 = lab.helper(lab.a)
    a2.call("start")
    a2.call("apply", config=lab.config("a"))
    info = a2.call("info")
    assert info["pid"] == first["pid"] and info["ifindex"] == first["ifindex"]
    assert [e["kind"] for e in info["events"]] == ["adopted"]
    assert info["last_change_empty"]  # nothing to change: the same config
    assert handshake_of(a2.call("stats"), lab.key_b.public_key()) == hs
    assert lab.ping(lab.a, "10.99.0.2")

    # The adopted process is supervised too.
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(
        lambda: a2.call("info")["pid"] not in (None, first["pid"]), "restart of adopted process"
    )
    wait_for(lambda: lab.ping(lab.a, "10.99.0.2"), "ping after restarting the adopted process")
    for h in (a2, b):
        h.call("close", remove=True)
        h.exit()


def test_start_fails_cleanly_with_missing_binary(lab: Lab) -> None:
    h = lab.helper(lab.a)
    answer = h.call_raw("start", binary="/nonexistent/wireguard-go")
    assert "cannot run" in answer["error"]
    assert lab.ifindex(lab.a) is None
    h.exit()


def _kernel_wireguard() -> bool:
    from pcloud.backend.wg.kernel import kernel_wireguard_available

    return kernel_wireguard_available()


@pytest.mark.skipif(
    not _kernel_wireguard(),
    reason="no WireGuard kernel module (not in /sys/module, modules.builtin or modules.dep)",
)
def test_kernel_driver_ping_and_incremental_apply(lab: Lab) -> None:
    a, b = up_pair(lab, "kernel")
    info = a.call("info")
    hs = handshake_of(a.call("stats"), lab.key_b.public_key())
    assert hs is not None and info["listen_port"] == 51820
    third = {"public_key": lab.key_c.public_key(), "allowed_ips": ["10.99.0.3/32"]}
    a.call("apply", config=lab.config("a", extra=[third]))
    assert len(a.call("stats")) == 2
    assert handshake_of(a.call("stats"), lab.key_b.public_key()) == hs
    assert lab.ifindex(lab.a) == info["ifindex"]
    for h in (a, b):
        h.call("close", remove=True)
        h.exit()
    assert lab.ifindex(lab.a) is None


# --------------------------------------------------------------------------------------------
# The helper: runs inside a namespace, owns one UserspaceDriver, answers JSON lines.


async def _helper(name: str, socket_dir: str, kind: str) -> None:
    from pcloud.backend.wg import link
    from pcloud.backend.wg.driver import Driver, DriverEvent, InterfaceConfig, PeerConfig
    from pcloud.backend.wg.kernel import KernelDriver
    from pcloud.backend.wg.userspace import UserspaceDriver

    events: list[DriverEvent] = []
    driver: Driver
    if kind == "kernel":
        driver = KernelDriver(name)
    else:
        driver = UserspaceDriver(name, socket_dir=socket_dir, on_event=events.append)
    last_change_empty: bool | None = None

    async def handle(req: dict[str, Any]) -> Any:
        nonlocal driver, last_change_empty
        op = req["op"]
        if op == "start":
            if "binary" in req:
                driver = UserspaceDriver(
                    name, socket_dir=socket_dir, binary=req["binary"], on_event=events.append
                )
            await driver.start()
            return {"pid": getattr(driver, "pid", None)}
        if op == "apply":
            c = req["config"]
            cfg = InterfaceConfig(
                private_key=c["private_key"],
                address=c["address"],
                listen_port=c.get("listen_port"),
                peers=tuple(
                    PeerConfig(
                        public_key=p["public_key"],
                        allowed_ips=tuple(p["allowed_ips"]),
                        endpoint=p.get("endpoint"),
                        persistent_keepalive=p.get("persistent_keepalive"),
                    )
                    for p in c["peers"]
                ),
                routes=tuple(c.get("routes", ())),
            )
            from pcloud.backend.wg.diff import diff

            if isinstance(driver, UserspaceDriver):
                last_change_empty = diff(await driver._uapi.get(), cfg).empty
            await driver.apply(cfg)
            return {}
        if op == "stats":
            return [
                asdict(s)
                | {"last_handshake": s.last_handshake.timestamp() if s.last_handshake else None}
                for s in await driver.stats()
            ]
        if op == "info":
            idx = await link.link_index(name)
            mtu = None
            if idx is not None:
                mtu = int(Path(f"/sys/class/net/{name}/mtu").read_text())  # noqa: ASYNC240
            return {
                "pid": getattr(driver, "pid", None),
                "ifindex": idx,
                "mtu": mtu,
                "listen_port": await driver.listen_port(),
                "events": [asdict(e) for e in events],
                "last_change_empty": last_change_empty,
            }
        if op == "close":
            await driver.close(remove_interface=bool(req["remove"]))
            return {}
        raise ValueError(f"unknown op {op}")

    while True:
        # Read in a thread so the event loop (and the driver's supervisor) keeps running.
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        try:
            answer = {"result": await handle(json.loads(line))}
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "helper":
        asyncio.run(_helper(sys.argv[2], sys.argv[3], sys.argv[4]))
    else:
        sys.exit("usage: test_wg_drivers.py helper IFNAME SOCKET_DIR userspace|kernel")
