"""Tunnel throughput: iperf3 through a PCloud tunnel vs a hand-configured wireguard-go pair.

`python -m bench.tunnel_throughput [--seconds 8]` builds one lab with two pairs of hosts on the
same bridge: one pair joined by PCloud (coordination server, backends, the config PCloud makes),
the other configured by hand the way the seed does it (`wireguard-go`, `wg set`, `ip addr`,
MTU 1420), and runs iperf3 through each, one after the other, in the same run. The ratio is
printed against the DESIGN section 7 target (within 5%). Figures, not assertions.

`--filter` measures the packet filter instead (DESIGN section 10): the PCloud pair under a policy
with several port rules (iperf3's port allowed by the last one), with the receiver's filter in
force, then with its nftables table removed by hand (filter off), alternating; the ratio is
printed against the same 5% target.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from rich.console import Console
from rich.table import Table

from tests.lab import Host, Lab, wait_for
from tests.lab.mesh import Mesh, ping

HAND_NET = "10.77.0."  # inside the lab's namespaces only


def iperf(client: Host, server: Host, ip: str, seconds: int) -> float:
    """Mbit/s received by `server` from `client` over `ip`."""
    proc = server.spawn("iperf3-server", ["iperf3", "-s", "-1", "-B", ip])
    try:
        # iperf3 buffers its banner when writing to a file: wait for the socket instead.
        wait_for(
            lambda: ":5201" in server.run(["ss", "-ltn"]).stdout,
            timeout=10,
            what="iperf3 server listening",
        )
        res = client.run(["iperf3", "-c", ip, "-t", str(seconds), "-J"], timeout=seconds + 30)
        data = json.loads(res.stdout)
        return float(data["end"]["sum_received"]["bits_per_second"]) / 1e6
    finally:
        proc.stop()


def hand_pair(a: Host, b: Host) -> tuple[str, str]:
    """Two hosts joined by wireguard-go configured by hand with `wg` and `ip`."""
    keys = {}
    for h in (a, b):
        h.spawn(
            "wireguard-go-hand",
            ["wireguard-go", "-f", "wg9"],
            env={"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"},
        )
        wait_for(
            lambda h=h: h.path("/var/run/wireguard/wg9.sock").exists(),
            timeout=10,  # type: ignore[misc]
            what=f"{h.name}'s wg9 socket",
        )
        private = h.run(["wg", "genkey"]).stdout.strip()
        public = h.run(["wg", "pubkey"], input=private + "\n").stdout.strip()
        h.path("/etc/pcloud/wg9.key").write_text(private + "\n")
        keys[h.name] = public
    addrs = {a.name: HAND_NET + "1", b.name: HAND_NET + "2"}
    for h, peer in ((a, b), (b, a)):
        h.run(
            [
                "wg",
                "set",
                "wg9",
                "listen-port",
                "51999",
                "private-key",
                "/etc/pcloud/wg9.key",
                "peer",
                keys[peer.name],
                "allowed-ips",
                f"{addrs[peer.name]}/32",
                "endpoint",
                f"{peer.ip}:51999",
            ]
        )
        h.run(["ip", "addr", "add", f"{addrs[h.name]}/24", "dev", "wg9"])
        h.run(["ip", "link", "set", "wg9", "mtu", "1420", "up"])
    wait_for(lambda: ping(a, addrs[b.name]), timeout=10, what="the hand-made tunnel")
    return addrs[a.name], addrs[b.name]


# Several rules before the one that lets iperf3 in, so each packet walks a realistic chain.
FILTER_POLICY = """{
  "acls": [
    {"action": "accept", "src": ["admin@"], "proto": "tcp", "dst": ["admin@:22,443"]},
    {"action": "accept", "src": ["admin@"], "proto": "udp", "dst": ["admin@:53,5353"]},
    {"action": "accept", "src": ["admin@"], "proto": "icmp", "dst": ["admin@:*"]},
    {"action": "accept", "src": ["admin@"], "dst": ["admin@:5201,8000-8099"]},
  ],
}"""


def filter_rules(host: Host) -> int:
    """nftables rules in our table on `host` (0: no table)."""
    res = host.run(["nft", "-j", "list", "table", "inet", "pcloud"], check=False)
    if res.returncode != 0:
        return 0
    return sum(1 for item in json.loads(res.stdout)["nftables"] if "rule" in item)


def pc_pair(lab: Lab) -> tuple[Mesh, Host, Host]:
    """A coordination server on rpi111 and two PCs joined to it: the tunnel measured."""
    mesh = Mesh(lab)
    mesh.start_server(lab.add_host("rpi111"))
    mesh.create_user("admin", "admin-password", admin=True)
    key = mesh.auth_key("admin", reusable=True)
    p1, p2 = lab.add_host("pc-a"), lab.add_host("pc-b")
    for h in (p1, p2):
        mesh.join_headless(h, key)
    return mesh, p1, p2


def filter_bench(console: Console, seconds: int, rounds: int) -> None:
    with Lab() as lab:
        mesh, p1, p2 = pc_pair(lab)
        mesh.set_policy(FILTER_POLICY)
        ip2 = mesh.address(p2)
        wait_for(lambda: filter_rules(p2) >= 8, timeout=20, what="pc-b's filter for the policy")
        mesh.wait_ping(p1, ip2)
        rules = filter_rules(p2)
        console.print(f"filter in force on pc-b: {rules} nftables rules; running iperf3 ...")
        results = []
        for _ in range(rounds):  # alternate so neither side always runs on a warmer machine
            p2.run(["nft", "delete", "table", "inet", "pcloud"], check=False)
            assert filter_rules(p2) == 0
            results.append(("off", iperf(p1, p2, ip2, seconds)))
            # The backend installs its table again when it (re)applies a netmap: down + up.
            p2.pcloud("down")
            p2.pcloud("up")
            wait_for(lambda: filter_rules(p2) == rules, timeout=20, what="the filter back")
            mesh.wait_ping(p1, ip2)
            results.append(("on", iperf(p1, p2, ip2, seconds)))
    ons = [v for k, v in results if k == "on"]
    offs = [v for k, v in results if k == "off"]
    on, off = max(ons), max(offs)
    ratio = on / off if off else float("nan")
    table = Table(title=f"iperf3 through a PCloud tunnel ({rounds} runs each, alternating)")
    for col in ("receiver's packet filter", "best Mbit/s", "median", "all runs"):
        table.add_column(col)
    for name, vals in ((f"on ({rules} nftables rules)", ons), ("off (table removed)", offs)):
        runs = " ".join(f"{v:.0f}" for v in vals)
        table.add_row(name, f"{max(vals):.0f}", f"{statistics.median(vals):.0f}", runs)
    console.print(table)
    verdict = "PASS" if ratio >= 0.95 else "MISS"
    console.print(
        f"packet filter throughput (best of each): on {on:.0f} Mbit/s vs off {off:.0f} Mbit/s, "
        f"ratio {ratio:.2f} (target >= 0.95: {verdict}); median ratio "
        f"{statistics.median(ons) / statistics.median(offs):.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.tunnel_throughput", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--filter", action="store_true", help="filter on vs off instead")
    p.add_argument("--rounds", type=int, default=2, help="--filter: runs of each, alternating")
    args = p.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=120)
    if args.filter:
        filter_bench(console, args.seconds, args.rounds)
        return 0
    with Lab() as lab:
        mesh, p1, p2 = pc_pair(lab)
        ip2 = mesh.address(p2)
        mesh.wait_ping(p1, ip2)
        h1, h2 = lab.add_host("hand-a"), lab.add_host("hand-b")
        _, hand_ip2 = hand_pair(h1, h2)
        console.print("both tunnels up; running iperf3 ...")
        results = []
        for _ in range(2):  # alternate so neither side always runs on a warmer machine
            results.append(("pcloud", iperf(p1, p2, ip2, args.seconds)))
            results.append(("hand", iperf(h1, h2, hand_ip2, args.seconds)))
    pcloud = max(v for k, v in results if k == "pcloud")
    hand = max(v for k, v in results if k == "hand")
    ratio = pcloud / hand if hand else float("nan")
    table = Table(title="iperf3 through WireGuard (best of 2 runs each)")
    for col in ("tunnel", "Mbit/s"):
        table.add_column(col)
    table.add_row("PCloud (its own config)", f"{pcloud:.0f}")
    table.add_row("hand-configured wireguard-go pair", f"{hand:.0f}")
    console.print(table)
    verdict = "PASS" if ratio >= 0.95 else "MISS"
    console.print(
        f"tunnel throughput: PCloud {pcloud:.0f} Mbit/s vs hand {hand:.0f} Mbit/s, "
        f"ratio {ratio:.2f} (target >= 0.95: {verdict})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
