"""The stand-in server's HTTPS side: /ping, /cacerts, joins, member sync and the node API.

Members live in DATA_DIR/server/members.json with a version number. Any server accepts a join;
after a change it pushes the list to the other servers (newest version wins), which is enough
to model the embedded etcd's shared view for `kubectl get nodes` on any server. A member is
Ready when its own listener answers /ping right now, so a stopped node really shows NotReady.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger("k3s-standin")


@dataclass
class Identity:
    """What this process is and knows: its node, the cluster secrets, its data dir."""

    node_name: str
    node_ip: str
    role: str  # "server" or "agent"
    url: str  # https://IP:PORT of this node's own listener
    password: str  # the cluster secret (the password part of the token)
    admin_token: str  # bearer token in the kubeconfig
    data_dir: Path
    ca_pem: bytes
    ca_key_pem: bytes


class Members:
    """The member list, persisted, guarded by a lock (the HTTP server is threaded)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.version = 0
        self.items: dict[str, dict[str, Any]] = {}
        if path.exists():
            doc = json.loads(path.read_text())
            self.version, self.items = int(doc["version"]), dict(doc["members"])

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"version": self.version, "members": json.loads(json.dumps(self.items))}

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": self.version, "members": self.items}, indent=1))
        tmp.replace(self.path)

    def upsert(self, member: dict[str, Any]) -> None:
        with self.lock:
            self.items[member["name"]] = member
            self.version += 1
            self._save()

    def update(self, name: str, **fields: Any) -> bool:
        with self.lock:
            if name not in self.items:
                return False
            if fields.get("deleted"):
                del self.items[name]
            else:
                self.items[name].update(fields)
            self.version += 1
            self._save()
            return True

    def adopt(self, doc: dict[str, Any]) -> bool:
        """Take a pushed list if it is newer than ours."""
        with self.lock:
            if int(doc["version"]) <= self.version:
                return False
            self.version, self.items = int(doc["version"]), dict(doc["members"])
            self._save()
            return True


def client_ssl(ca_pem: bytes | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_pem is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=ca_pem.decode())
    return ctx


def probe(url: str, ca_pem: bytes | None) -> bool:
    try:
        with httpx.Client(verify=client_ssl(ca_pem), timeout=1.0) as c:
            return c.get(f"{url}/ping").status_code == 200
    except httpx.HTTPError:
        return False


def node_object(member: dict[str, Any], ready: bool) -> dict[str, Any]:
    """A member as a Kubernetes Node object (the fields kubectl users read)."""
    labels = {"kubernetes.io/hostname": member["name"]}
    if member["role"] == "server":
        labels.update(
            {
                "node-role.kubernetes.io/control-plane": "true",
                "node-role.kubernetes.io/etcd": "true",
                "node-role.kubernetes.io/master": "true",
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": member["name"], "labels": labels},
        "spec": {"unschedulable": bool(member.get("unschedulable", False))},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": member["ip"]},
                {"type": "Hostname", "address": member["name"]},
            ],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
        "pcloudStandin": {"source": member.get("source"), "joinedAt": member.get("joined_at")},
    }


class Handler(BaseHTTPRequestHandler):
    """One request. `server` is a `StandinServer`."""

    server: StandinServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)

    def _send(self, code: int, body: bytes | dict[str, Any], ctype: str = "") -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype or "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length", "0"))
        doc = json.loads(self.rfile.read(n) or b"{}")
        return doc if isinstance(doc, dict) else {}

    def _basic_ok(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return False
        try:
            _, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return False
        return hmac.compare_digest(password.encode(), self.server.me.password.encode())

    def _bearer_ok(self) -> bool:
        if not self.server.me.admin_token:
            return False  # agents hold no admin credential and serve no node API
        want = f"Bearer {self.server.me.admin_token}"
        return hmac.compare_digest(self.headers.get("Authorization", "").encode(), want.encode())

    def do_GET(self) -> None:
        me = self.server.me
        if self.path == "/ping":
            return self._send(200, b"pong", "text/plain")
        if self.path == "/cacerts":
            return self._send(200, me.ca_pem, "application/x-pem-file")
        if self.path == "/api/v1/nodes":
            if not self._bearer_ok():
                return self._send(401, {"message": "Unauthorized"})
            items = []
            for m in self.server.members.snapshot()["members"].values():
                # Agents serve their kubelet port with their own certificate.
                ca = me.ca_pem if m["role"] == "server" else None
                ready = m["name"] == me.node_name or probe(m["url"], ca)
                items.append(node_object(m, ready))
            return self._send(200, {"apiVersion": "v1", "kind": "NodeList", "items": items})
        self._send(404, {"message": "not found"})

    def do_POST(self) -> None:
        me, members = self.server.me, self.server.members
        if self.path not in ("/v1-k3s/join", "/v1-k3s/sync"):
            return self._send(404, {"message": "not found"})
        if not self._basic_ok():
            log.warning("refused %s from %s: bad token", self.path, self.client_address[0])
            return self._send(401, {"message": "Unauthorized: invalid token"})
        body = self._body()
        if self.path == "/v1-k3s/sync":
            members.adopt(body)
            return self._send(200, {"version": members.version})
        source = self.client_address[0]
        if body.get("ip") != source:
            log.warning("refused join of %s: came from %s", body.get("name"), source)
            return self._send(
                403,
                {
                    "message": f"join from {source} but node-ip is {body.get('ip')}: "
                    "a node must join from its own (mesh) address"
                },
            )
        member = {
            "name": str(body["name"]),
            "ip": source,
            "role": "server" if body.get("role") == "server" else "agent",
            "url": str(body["url"]),
            "source": source,
            "joined_at": time.time(),
        }
        members.upsert(member)
        log.info("%s %s joined from %s", member["role"], member["name"], source)
        self.server.push()
        reply = members.snapshot()
        if member["role"] == "server":  # only servers receive the cluster's secrets
            reply.update(
                ca_cert=me.ca_pem.decode(),
                ca_key=me.ca_key_pem.decode(),
                admin_token=me.admin_token,
            )
        self._send(200, reply)

    def do_PATCH(self) -> None:
        self._node_change(unschedulable=bool(self._body().get("spec", {}).get("unschedulable")))

    def do_DELETE(self) -> None:
        self._node_change(deleted=True)

    def _node_change(self, **fields: Any) -> None:
        prefix = "/api/v1/nodes/"
        if not self.path.startswith(prefix):
            return self._send(404, {"message": "not found"})
        if not self._bearer_ok():
            return self._send(401, {"message": "Unauthorized"})
        name = self.path[len(prefix) :]
        if not self.server.members.update(name, **fields):
            return self._send(404, {"message": f'nodes "{name}" not found'})
        self.server.push()
        self._send(200, {"name": name})


class StandinServer(ThreadingHTTPServer):
    """The TLS listener of one stand-in node."""

    daemon_threads = True

    def __init__(
        self, addr: tuple[str, int], me: Identity, members: Members, tls: ssl.SSLContext
    ) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, Handler)
        # The handshake runs lazily in the request thread, so a stalled client cannot block
        # the accept loop.
        self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.me = me
        self.members = members

    def push(self) -> None:
        """Send the member list to every other server (best effort: the next change heals)."""
        doc = self.members.snapshot()
        auth = ("server", self.me.password)
        for m in doc["members"].values():
            if m["role"] != "server" or m["name"] == self.me.node_name:
                continue
            try:
                with httpx.Client(verify=client_ssl(self.me.ca_pem), timeout=2.0) as c:
                    c.post(f"{m['url']}/v1-k3s/sync", json=doc, auth=auth)
            except httpx.HTTPError as exc:
                log.warning("could not sync members to %s: %s", m["name"], exc)
