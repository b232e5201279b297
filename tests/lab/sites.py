"""Sites behind NATs on a lab "internet": home, cafe, mobile and office routers (DESIGN section 9).

Layout (run id `ab12`), on top of a `Lab` whose LAN (192.168.0.0/24) becomes the home LAN:

    pcl-ab12-inet        br0: the internet (203.0.113.0/24 and 198.51.100.0/24, one segment)
    pcl-ab12-r-home      wan 203.0.113.10, lan 192.168.0.1 on the lab LAN; masquerade; forwards
                         HTTPS 8443/tcp, 8443/udp (relay) and the WireGuard port to rpi111;
                         with a second server, 8444/tcp and 8444/udp to its 8443
    pcl-ab12-r-cafe      wan 198.51.100.20, lan 10.20.0.1/24; masquerade (endpoint-independent)
    pcl-ab12-r-mobile    wan 198.51.100.30, lan 10.30.0.1/24; masquerade fully-random: a new
                         random source port per destination (endpoint-dependent, "symmetric")
    pcl-ab12-r-office    wan 203.0.113.40, lan 10.40.0.1/24; masquerade, and only TCP to
                         443/8443 leaves (all UDP dropped)

A site host (`laptop` at the cafe, ...) is a normal lab `Host` whose eth0 sits on its router's
LAN; `move` re-plugs it into another site's LAN (its outer address changes) and `renumber`
gives a router another public address (an ISP's new lease). br_netfilter is loaded on the machine: each bridge namespace turns
`bridge-nf-call-iptables` off, or the bridged frames would pass the routers' NAT hooks.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from . import netns
from .host import Host
from .lab import Lab, LabError

HOME_PUBLIC = "203.0.113.10"
HOME_GW = "192.168.0.1"
HTTPS_PORT = 8443
WG_PORT = 51820  # the UDP port the home router forwards to rpi111 (its --listen-port)
SECOND_HTTPS_PORT = 8444  # forwarded to a second server's 8443/tcp when `home` is given one
ECHO_PORTS = (8478, 8479)  # pcloud-server's UDP address echo (server/reach), forwarded too


@dataclass(frozen=True)
class SiteSpec:
    wan: str
    lan_net: int  # 10.<lan_net>.0.0/24 behind the router (home uses the lab LAN instead)
    nat: str  # "masquerade", "symmetric" or "tcp-only"


SITES: dict[str, SiteSpec] = {
    "cafe": SiteSpec("198.51.100.20", 20, "masquerade"),
    "mobile": SiteSpec("198.51.100.30", 30, "symmetric"),
    "mobile2": SiteSpec("198.51.100.31", 31, "symmetric"),  # a second phone network
    "office": SiteSpec("203.0.113.40", 40, "tcp-only"),
}
# Both documentation ranges share the one internet segment: each router reaches the other
# range on-link, with no router in between.
PUBLIC_NETS = ("203.0.113.0/24", "198.51.100.0/24")


def _sh(ns: str, *argv: str, input: str | None = None) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        input=input, text=True, check=True, capture_output=True, timeout=10,
    )  # fmt: skip


def _no_bridge_netfilter(ns: str) -> None:
    # Per network namespace since Linux 5.3; absent when br_netfilter is not loaded (then the
    # bridge never calls netfilter anyway).
    for key in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"):
        subprocess.run(
            ["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.bridge.{key}=0"],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip


def _nat_rules(kind: str, forwards: str = "") -> str:
    """The router's nftables ruleset: NAT towards `wan`, the site's filter, port forwards."""
    flags = " random,fully-random" if kind == "symmetric" else ""
    forward = ""
    if kind == "tcp-only":
        forward = (
            "  chain gate { type filter hook forward priority filter; policy drop;\n"
            '    iifname "wan" ct state established,related accept\n'
            '    iifname "lan" tcp dport { 443, 8443 } accept\n'
            "  }\n"
        )
    pre = ""
    if forwards:
        pre = f"  chain pre {{ type nat hook prerouting priority dstnat; {forwards} }}\n"
    # A router's own firewall drops unsolicited packets to it, as home routers do. It matters for
    # hole punching: a dropped packet's conntrack entry is never confirmed, whereas an accepted
    # one (answered by ICMP port unreachable) would hold the public port that the LAN host's
    # own outgoing flow needs, and masquerade would then pick another port for it.
    guard = (
        '  chain in { type filter hook input priority filter; iifname "wan" ct state new drop; }\n'
    )
    return (
        "table ip pcl_site {\n"
        f"{pre}{guard}"
        f'  chain post {{ type nat hook postrouting priority srcnat; oifname "wan" masquerade{flags}; }}\n'
        f"{forward}"
        "}\n"
    )


class Sites:
    """Builds the internet and the site routers into `lab`; the lab's teardown removes them."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.inet_ns = lab.prefix + "inet"
        self.routers: dict[str, str] = {}  # site -> router namespace
        self.public: dict[str, str] = {}  # site -> public (wan) address
        self._wan_ports = 0
        self._plugged: dict[str, str] = {}  # site -> the host on its LAN
        lab._add_ns(self.inet_ns)
        netns.ip_in(self.inet_ns, "link", "add", "br0", "type", "bridge")
        netns.ip_in(self.inet_ns, "link", "set", "br0", "up")
        _no_bridge_netfilter(self.inet_ns)
        _no_bridge_netfilter(lab.lan_ns)

    def _router(self, site: str, wan: str) -> str:
        ns = self.lab.prefix + "r-" + site
        self.lab._add_ns(ns)
        self._wan_ports += 1
        port = f"wp{self._wan_ports}"
        netns.ip_in(self.inet_ns, "link", "add", port, "type", "veth", "peer", "name", "wan",
                    "netns", ns)  # fmt: skip
        netns.ip_in(self.inet_ns, "link", "set", port, "master", "br0", "up")
        netns.ip_in(ns, "addr", "add", f"{wan}/24", "dev", "wan")
        netns.ip_in(ns, "link", "set", "wan", "up")
        for net in PUBLIC_NETS:
            if not _same_24(net, wan):
                netns.ip_in(ns, "route", "add", net, "dev", "wan")
        _sh(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.routers[site] = ns
        self.public[site] = wan
        return ns

    def home(self, server: Host, *others: Host, second: Host | None = None) -> str:
        """Put the lab LAN behind the home router (LAN hosts route through 192.168.0.1); forward
        8443/tcp, WG_PORT/udp and the echo ports to `server`, and SECOND_HTTPS_PORT/tcp and /udp
        (its relay) to `second`'s 8443 when given. Returns the home's public address."""
        ns = self._router("home", HOME_PUBLIC)
        self.lab._claim(HOME_GW, "r-home")
        self.lab._ports += 1
        port = f"vh{self.lab._ports}"
        netns.ip_in(self.lab.lan_ns, "link", "add", port, "type", "veth", "peer", "name", "lan",
                    "netns", ns)  # fmt: skip
        netns.ip_in(self.lab.lan_ns, "link", "set", port, "master", "br0", "up")
        netns.ip_in(ns, "addr", "add", f"{HOME_GW}/24", "dev", "lan")
        netns.ip_in(ns, "link", "set", "lan", "up")
        forwards = (
            f'iifname "wan" tcp dport {HTTPS_PORT} dnat to {server.ip}:{HTTPS_PORT}; '
            f'iifname "wan" udp dport {WG_PORT} dnat to {server.ip}:{WG_PORT}; '
            # The relay's UDP port (the HTTPS port's number, as the README tells users).
            f'iifname "wan" udp dport {HTTPS_PORT} dnat to {server.ip}:{HTTPS_PORT};'
        )
        forwards += "".join(f' iifname "wan" udp dport {p} dnat to {server.ip}:{p};'
                            for p in ECHO_PORTS)  # fmt: skip
        if second is not None:
            forwards += (
                f' iifname "wan" tcp dport {SECOND_HTTPS_PORT} dnat to {second.ip}:{HTTPS_PORT};'
                # Its relay too: the UDP port with the number of the public HTTPS port.
                f' iifname "wan" udp dport {SECOND_HTTPS_PORT} dnat to {second.ip}:{HTTPS_PORT};'
            )
        _sh(ns, "nft", "-f", "-", input=_nat_rules("masquerade", forwards))
        for host in (server, *others, *([second] if second else [])):
            netns.ip_in(host.ns, "route", "add", "default", "via", HOME_GW)
        return HOME_PUBLIC

    def add_router(self, site: str) -> str:
        """`site`'s router with its NAT (made once); its LAN gets a host by add_host or move."""
        if site not in self.routers:
            spec = SITES[site]
            _sh(self._router(site, spec.wan), "nft", "-f", "-", input=_nat_rules(spec.nat))
        return self.routers[site]

    def _plug(self, site: str, name: str, ns: str) -> str:
        """Cable namespace `ns` (eth0) to `site`'s LAN; returns its private address."""
        if site in self._plugged:
            raise LabError(f"site {site} already has its host ({self._plugged[site]})")
        router = self.add_router(site)
        spec = SITES[site]
        gw, private = f"10.{spec.lan_net}.0.1", f"10.{spec.lan_net}.0.2"
        netns.ip_in(router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0",
                    "netns", ns)  # fmt: skip
        netns.ip_in(router, "addr", "add", f"{gw}/24", "dev", "lan")
        netns.ip_in(router, "link", "set", "lan", "up")
        netns.ip_in(ns, "addr", "add", f"{private}/24", "dev", "eth0")
        netns.ip_in(ns, "link", "set", "eth0", "up")
        netns.ip_in(ns, "route", "add", "default", "via", gw)
        self._plugged[site] = name
        return private

    def add_host(self, site: str, name: str) -> Host:
        """A host alone on `site`'s LAN (10.N.0.2/24) behind that site's router."""
        ns = self.lab.prefix + name
        self.lab._add_ns(ns)
        private = self._plug(site, name, ns)
        router = self.routers[site]
        host = Host(self.lab, name, ns, private, 24, lan_ns=router, public_ip=SITES[site].wan)
        self.lab.hosts[name] = host
        host.start_holder()
        return host

    def move(self, host: Host, site: str) -> None:
        """Unplug `host` from its site's LAN and plug it into `site`'s (a laptop carried from
        the cafe to a phone's hotspot): its private and public addresses both change at once."""
        old = next(s for s, name in self._plugged.items() if name == host.name)
        netns.ip_in(host.ns, "link", "del", "eth0")  # the router's end goes with it
        del self._plugged[old]
        host.ip = self._plug(site, host.name, host.ns)
        host.lan_ns, host.public_ip = self.routers[site], SITES[site].wan

    def renumber(self, site: str, new_wan: str) -> None:
        """`site`'s router gets another public address and loses the old one (the kernel drops
        the NAT mappings made with it, as when an ISP hands out a new lease)."""
        ns, old = self.routers[site], self.public[site]
        # The old address first: deleting a primary address takes its secondaries with it.
        netns.ip_in(ns, "addr", "del", f"{old}/24", "dev", "wan")
        netns.ip_in(ns, "addr", "add", f"{new_wan}/24", "dev", "wan")
        for net in PUBLIC_NETS:
            if not _same_24(net, new_wan):
                netns.ip_in(ns, "route", "replace", net, "dev", "wan")
        self.public[site] = new_wan


def _same_24(net: str, addr: str) -> bool:
    return net.rsplit(".", 1)[0] == addr.rsplit(".", 1)[0]
