"""Scripts the relay test runs inside lab hosts (with the venv's python): a capture on the relaying
server, a hostile relay client, and a read of the relay's counters through the admin socket."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from tests.lab import Host
from tests.lab.mesh import SERVER_DIR

# Inside the relaying server: capture every IPv4 UDP packet to or from PORT on IFACE for SECS
# seconds (an AF_PACKET socket: what tcpdump would see) and summarise it as JSON.
CAPTURE = r"""
import json, socket, struct, sys, time
iface, port, secs, pattern = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), bytes.fromhex(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
s.bind((iface, 0))
s.settimeout(0.2)
out = {"udp": 0, "pattern": 0, "kinds": {}, "wg": {}, "other_pattern": 0}
print("ready", flush=True)
end = time.monotonic() + secs
while time.monotonic() < end:
    try:
        pkt = s.recv(65535)
    except socket.timeout:
        continue
    if pattern in pkt:
        out["other_pattern"] += 1
    if len(pkt) < 14 + 20 or pkt[12:14] != b"\x08\x00" or pkt[14 + 9] != 17:
        continue
    ihl = (pkt[14] & 15) * 4
    udp = pkt[14 + ihl:]
    sport, dport = struct.unpack("!HH", udp[:4])
    if port not in (sport, dport):
        continue
    body = udp[8:]
    out["udp"] += 1
    out["pattern"] += pattern in body
    kind = str(body[0]) if body else "empty"
    out["kinds"][kind] = out["kinds"].get(kind, 0) + 1
    if body[:1] in (b"\x03", b"\x04") and len(body) > 33:
        wg = str(body[33])
        out["wg"][wg] = out["wg"].get(wg, 0) + 1
print(json.dumps(out), flush=True)
"""

# Inside a node: act as a hostile relay client with this node's own key and token (STATE dir).
# `unregistered`: SEND frames with no hello first. `policy`: a proven hello, then SEND frames
# to TARGET (a key the policy keeps from this node). Prints whether the relay welcomed us.
PROBE = r"""
import base64, json, socket, ssl, sys, time, httpx
from pcloud.backend.control.proof import make_proof
from pcloud.backend.keys import load_or_create_private_key
from pcloud.server.protocol import ServerKey
from pcloud.server.protocol import relay as wire
state, url, mode, target, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
node = json.load(open(state + "/node.json"))
key = load_or_create_private_key(__import__("pathlib").Path(state + "/private.key"))
ctx = ssl.create_default_context(cafile=state + "/ca.pem")
info = httpx.get(url + wire.RELAY_PATH, verify=ctx, headers={"Authorization": "Bearer " + node["node_token"]}).json()
host = url.split("//")[1].rsplit(":", 1)[0]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((host, info["udp_port"]))
s.settimeout(2)
welcomed = False
if mode == "policy":
    box = base64.b64decode(make_proof(key, ServerKey(public_key=info["public_key"], time=info["time"]), "relay"))
    s.send(wire.hello(base64.b64decode(key.public_key()), box))
    welcomed = s.recv(100)[:1] == bytes((wire.WELCOME,))
junk = bytes([4]) + bytes(31) + b"hostile"  # looks like a WireGuard data packet
for _ in range(count):
    s.send(wire.send(base64.b64decode(target), junk))
    time.sleep(0.01)
print(json.dumps({"welcomed": welcomed}))
"""

METRICS = r"""
import sys, httpx
with httpx.Client(transport=httpx.HTTPTransport(uds=sys.argv[1])) as c:
    print(c.get("http://admin/metrics").text)
"""


def relay_counters(server: Host) -> dict[str, float]:
    """The relay's Prometheus counters on `server` (through the admin socket, root only)."""
    text = server.run([sys.executable, "-c", METRICS, f"{SERVER_DIR}/admin.sock"]).stdout
    out = {}
    for name, labels, value in re.findall(r"^(pcloud_relay_\w+?)(?:\{(.*?)\})? (\S+)$", text, re.M):
        out[name + (f"[{labels}]" if labels else "")] = float(value)
    return out


def dropped(counters: dict[str, float], reason: str) -> float:
    return counters.get(f'pcloud_relay_dropped_frames_total[reason="{reason}"]', 0.0)


def probe(host: Host, url: str, mode: str, target: str, count: int) -> dict[str, Any]:
    r = host.run([sys.executable, "-c", PROBE, "/var/lib/pcloud", url, mode, target, str(count)])
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))
