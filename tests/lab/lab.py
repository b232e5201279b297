"""The lab topology: a LAN bridge in its own namespace, hosts attached to it, optional NAT.

Layout (run id `ab12`):

    pcl-ab12-lan          br0, one veth port per host or NAT router (vh1, vh2, ...)
    pcl-ab12-rpi111       eth0 = 192.168.0.111/24 (the other end of vh1), private mounts
    pcl-ab12-nat-laptop   router: eth0 on the LAN, eth1 = 10.99.1.1/24, masquerade (nftables)
    pcl-ab12-laptop       eth0 = 10.99.1.2/24, default route via the router

Every veth pair is created inside a lab namespace with its peer placed straight into another lab
namespace, and every `ip` call names its namespace, so the root network namespace is never
touched. Logs live under `/tmp/pcloud-lab/<run>/logs/` and survive teardown.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from . import netns, state
from .host import Host
from .process import Proc, stop_all
from .teardown import TeardownGuard

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_SEED_NAME_RE = re.compile(r"^rpi(\d{1,3})$")  # the seed's rpi111 -> .111 convention
_FIRST_FREE = 10  # where automatic addresses start (keeps .1-.9 for hand-picked ones)
NAT_NET = "10.99.{k}.0/24"


class LabError(RuntimeError):
    """The lab could not be built or torn down cleanly."""


def unavailable_reason() -> str | None:
    """Why the lab cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "the lab needs root (network and mount namespaces)"
    missing = netns.tools_missing()
    if missing:
        return f"the lab needs {', '.join(missing)} on PATH"
    return None


class Lab:
    """Virtual LAN of namespaced hosts. Use as a context manager; teardown always runs."""

    def __init__(
        self,
        *,
        subnet: str = "192.168.0.0/24",
        run_id: str | None = None,
        base_dir: Path | str = state.DEFAULT_BASE,
        keep: bool = False,
        remove_workdir: bool = False,
        handle_signals: bool = True,
        announce_keep: bool = True,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.run_id = run_id or self._fresh_run_id(self.base_dir)
        self.prefix = f"{netns.PREFIX}{self.run_id}-"
        self.subnet = ipaddress.IPv4Network(subnet)
        self.workdir = self.base_dir / self.run_id
        self.log_dir = self.workdir / "logs"
        self.lan_ns = self.prefix + "lan"
        self.keep = keep
        self.announce_keep = announce_keep  # False: the caller prints its own way back in
        self.remove_workdir = remove_workdir
        self.hosts: dict[str, Host] = {}
        self.procs: list[Proc] = []
        self.namespaces: list[str] = []  # every namespace we created, in creation order
        self._addresses: dict[str, str] = {}  # LAN address -> owner (host or router)
        self._ports = 0
        self._nat_nets = 0
        self._guard = TeardownGuard(self._teardown, handle_signals=handle_signals)
        self._started = False
        self._closed = False

    @staticmethod
    def _fresh_run_id(base_dir: Path) -> str:
        # Short ids keep namespace names readable; retry so that parallel or earlier runs (whose
        # logs are kept) never share namespaces or a work dir.
        while True:
            run_id = secrets.token_hex(2)
            if not (base_dir / run_id).exists() and not netns.list_names(f"pcl-{run_id}-"):
                return run_id

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            report = self.log_tails()
            # Printed for interactive runs and captured by pytest; also attached to the error
            # itself so the failure shows what each process said last.
            print(report, file=sys.stderr)
            exc.add_note(report)
        if self.keep:
            self.detach()
            return
        try:
            self.close()
        except LabError:
            if exc is None:
                raise
            # Do not hide the original failure behind a teardown complaint.
            print("lab teardown incomplete (see above)", file=sys.stderr)

    def start(self) -> None:
        """Create the work dirs and the LAN bridge. Called by `__enter__`."""
        if self._started:
            return
        reason = unavailable_reason()
        if reason:
            raise LabError(reason)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._started = True
        self._guard.install()
        try:
            self._add_ns(self.lan_ns)
            netns.ip_in(self.lan_ns, "link", "add", "br0", "type", "bridge")
            netns.ip_in(self.lan_ns, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Tear everything down now (idempotent). Raises LabError if something survived."""
        self._guard.run()
        leftovers = [ns for ns in self.namespaces if netns.exists(ns)]
        if leftovers:
            raise LabError(f"namespaces survived teardown: {leftovers}")

    def detach(self) -> None:
        """Leave the lab running (keep mode) and record it for `tests.lab.shell`/`down`."""
        self._guard.uninstall()
        path = state.state_path(self.base_dir)
        state.write(path, self.describe())
        if not self.announce_keep:
            return
        print(
            f"lab {self.run_id} kept running; state in {path}\n"
            f"  enter a host: .venv/bin/python -m tests.lab.shell HOST\n"
            f"  tear down:    .venv/bin/python -m tests.lab.down",
            file=sys.stderr,
        )

    def _teardown(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        try:
            stop_all(self.procs, timeout=5.0)
        except Exception as exc:  # keep going: namespaces must still be deleted
            errors.append(f"stopping processes: {exc!r}")
        for host in self.hosts.values():
            try:
                host.stop_holder()
            except Exception as exc:
                errors.append(f"stopping holder of {host.name}: {exc!r}")
        # Hosts first, the LAN last: deleting a namespace also deletes its veth ends.
        survivors = netns.delete_all(list(reversed(self.namespaces)))
        if survivors:
            errors.append(f"namespaces still present: {survivors}")
        state.remove_if_run(state.state_path(self.base_dir), self.run_id)
        if self.remove_workdir:
            shutil.rmtree(self.workdir / "hosts", ignore_errors=True)
        if errors:
            print("lab teardown problems:\n  " + "\n  ".join(errors), file=sys.stderr)

    # ----------------------------------------------------------------- topology

    def add_host(self, name: str, ip: str | None = None, *, behind_nat: bool = False) -> Host:
        """Create host `name` attached to the LAN and return it once its namespaces are ready.

        `ip` is the host's LAN address (behind NAT: its router's LAN address); by default the
        seed's names get theirs (rpi111 -> .111) and other names the first free address.
        """
        if not self._started or self._closed:
            raise LabError("add_host needs a running lab (use `with Lab() as lab:`)")
        if not _NAME_RE.match(name) or name == "lan" or name.startswith("nat-"):
            raise LabError(f"bad host name {name!r}: lowercase letters, digits, '-'")
        if name in self.hosts:
            raise LabError(f"host {name} already exists")
        lan_ip = self._claim(ip or self._default_address(name), name)
        ns = self.prefix + name
        if behind_nat:
            router = self.prefix + "nat-" + name
            self._add_ns(router)
            self._attach_to_lan(router, lan_ip)
            self._nat_nets += 1
            net = ipaddress.IPv4Network(NAT_NET.format(k=self._nat_nets))
            gw, private = str(net[1]), str(net[2])
            self._add_ns(ns)
            netns.ip_in(router, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0",
                        "netns", ns)  # fmt: skip
            netns.ip_in(router, "addr", "add", f"{gw}/{net.prefixlen}", "dev", "eth1")
            netns.ip_in(router, "link", "set", "eth1", "up")
            self._configure_eth0(ns, private, net.prefixlen)
            netns.ip_in(ns, "route", "add", "default", "via", gw)
            self._enable_masquerade(router)
            host = Host(self, name, ns, private, net.prefixlen, lan_ns=router, public_ip=lan_ip)
        else:
            self._add_ns(ns)
            self._attach_to_lan(ns, lan_ip)
            host = Host(self, name, ns, lan_ip, self.subnet.prefixlen)
        self.hosts[name] = host
        host.start_holder()
        return host

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def register(self, proc: Proc) -> None:
        """Track a process so teardown stops it (Host.spawn calls this)."""
        self.procs.append(proc)

    def move_address(self, host: Host, new_ip: str) -> None:
        """Implementation of Host.set_lan_address."""
        old = host.public_ip
        self._claim(new_ip, host.name)
        plen = self.subnet.prefixlen
        # Delete first: removing a primary address also removes the secondaries in its subnet,
        # so adding the new one first would lose both.
        netns.ip_in(host.lan_ns, "addr", "del", f"{old}/{plen}", "dev", "eth0")
        netns.ip_in(host.lan_ns, "addr", "add", f"{new_ip}/{plen}", "dev", "eth0")
        del self._addresses[old]
        host.public_ip = new_ip
        if not host.behind_nat:
            host.ip = new_ip

    def _add_ns(self, ns: str) -> None:
        # Recorded before creation completes, so a half-built namespace is still torn down.
        self.namespaces.append(ns)
        netns.add(ns)

    def _attach_to_lan(self, ns: str, address: str) -> None:
        self._ports += 1
        port = f"vh{self._ports}"
        # Created in the LAN namespace with the peer placed directly into `ns`: neither end
        # ever exists in the root namespace.
        netns.ip_in(self.lan_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                    "netns", ns)  # fmt: skip
        netns.ip_in(self.lan_ns, "link", "set", port, "master", "br0", "up")
        self._configure_eth0(ns, address, self.subnet.prefixlen)

    @staticmethod
    def _configure_eth0(ns: str, address: str, prefixlen: int) -> None:
        netns.ip_in(ns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0")
        netns.ip_in(ns, "link", "set", "eth0", "up")

    @staticmethod
    def _enable_masquerade(router: str) -> None:
        # Both commands run inside the router namespace: sysctls under net.* and the nftables
        # ruleset are per network namespace.
        subprocess.run(
            ["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            check=True, capture_output=True, timeout=10,
        )  # fmt: skip
        ruleset = (
            "table ip pcl_nat {\n"
            "  chain post { type nat hook postrouting priority srcnat; "
            'oifname "eth0" masquerade; }\n'
            "}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", router, "nft", "-f", "-"],
            input=ruleset, text=True, check=True, capture_output=True, timeout=10,
        )  # fmt: skip

    def _default_address(self, name: str) -> str:
        m = _SEED_NAME_RE.match(name)
        if m:
            candidate = self.subnet.network_address + int(m.group(1))
            if candidate in self.subnet and str(candidate) not in self._addresses:
                return str(candidate)
        return self.free_address()

    def free_address(self) -> str:
        """The lowest unused LAN address from .10 up (for hosts, routers or address moves)."""
        for i, addr in enumerate(self.subnet.hosts(), start=1):
            if i >= _FIRST_FREE and str(addr) not in self._addresses:
                return str(addr)
        raise LabError(f"no free address left in {self.subnet}")

    def _claim(self, address: str, owner: str) -> str:
        addr = ipaddress.IPv4Address(address)
        if addr not in self.subnet or addr in (
            self.subnet.network_address,
            self.subnet.broadcast_address,
        ):
            raise LabError(f"{address} is not a host address of {self.subnet}")
        if address in self._addresses:
            raise LabError(f"{address} already belongs to {self._addresses[address]}")
        self._addresses[address] = owner
        return address

    # ----------------------------------------------------------------- reporting

    def log_tails(self, lines: int = 40) -> str:
        """The last `lines` lines of every process's log, for failure reports."""
        parts = [f"===== lab {self.run_id} logs in {self.log_dir} ====="]
        for proc in self.procs:
            state_ = "alive" if proc.alive else f"exited {proc.returncode}"
            parts.append(f"----- {proc.host}/{proc.name} pid {proc.pid} ({state_}) -----")
            parts.append(proc.log_text(tail=lines) or "(empty log)")
        return "\n".join(parts)

    def describe(self) -> dict[str, Any]:
        """What the state file records: enough for `shell` and `down` to work by PID."""
        return {
            "run_id": self.run_id,
            "workdir": str(self.workdir),
            "log_dir": str(self.log_dir),
            "namespaces": list(self.namespaces),
            "hosts": {
                h.name: {
                    "ns": h.ns,
                    "ip": h.ip,
                    "public_ip": h.public_ip,
                    "holder_pid": h.holder_pid,
                    "root": str(h.root),
                }
                for h in self.hosts.values()
            },
            "procs": [
                {"host": p.host, "name": p.name, "pid": p.pid, "log": str(p.log_path)}
                for p in self.procs
            ],
        }

    def __repr__(self) -> str:
        return f"<Lab {self.run_id} hosts={list(self.hosts)}>"
