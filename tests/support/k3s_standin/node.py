"""`k3s server` and `k3s agent` of the stand-in: state in the data dir, join, then listen.

Files follow K3s's layout under DATA_DIR: server/tls/server-ca.crt (+key), server/token (the
full `K10<ca-hash>::server:<secret>` token, 0600), server/node-token (symlink), server/cred/
(the secret and the admin bearer token), server/members.json. A restarted first server given a
different token refuses to start, as K3s does once its bootstrap data exists.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import httpx

from pcloud.backend.k3s import token as tokens
from tests.support.k3s_standin import pki
from tests.support.k3s_standin.cluster import Identity, Members, StandinServer, client_ssl
from tests.support.k3s_standin.settings import Settings, Usage

log = logging.getLogger("k3s-standin")

KUBELET_PORT = int(os.environ.get("PCLOUD_STANDIN_KUBELET_PORT", "10250"))


class Fatal(Exception):
    """Start-up failure: logged as K3s logs its fatal errors, exit 1."""


class Unreachable(Fatal):
    """The server to join did not answer (fatal only for a node that never joined)."""


def _secret_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _token(s: Settings) -> tokens.Token | None:
    value = s.get("token")
    if value is None and s.get("token-file"):
        try:
            value = Path(str(s.get("token-file"))).read_text()
        except OSError as exc:
            raise Fatal(f"cannot read token file: {exc.strerror}") from None
    if value is None:
        return None
    try:
        return tokens.parse_token(value)
    except tokens.TokenError as exc:
        raise Fatal(f"failed to normalize token: {exc}") from None


def _join(s: Settings, node_ip: str, name: str, url: str, tok: tokens.Token) -> dict[str, Any]:
    """Register with `--server`, from our own node IP, proving the token."""
    server = str(s.get("server")).rstrip("/")
    role = s.command
    try:
        probe_tx = httpx.HTTPTransport(local_address=node_ip, verify=client_ssl(None))
        with httpx.Client(transport=probe_tx, timeout=10.0) as c:
            cacerts = c.get(f"{server}/cacerts").content
        if tok.ca_hash and hashlib.sha256(cacerts).hexdigest() != tok.ca_hash:
            raise Fatal("token CA hash does not match the Cluster CA certificate hash")
        tx = httpx.HTTPTransport(local_address=node_ip, verify=client_ssl(cacerts))
        with httpx.Client(transport=tx, timeout=10.0) as c:
            r = c.post(
                f"{server}/v1-k3s/join",
                json={"name": name, "ip": node_ip, "role": role, "url": url},
                auth=("server" if role == "server" else "node", tok.password),
            )
    except (httpx.HTTPError, OSError) as exc:
        raise Unreachable(f"cannot join {server} from {node_ip}: {exc}") from None
    if r.status_code == 401:
        raise Fatal(f"failed to validate token with {server}: token is not valid")
    if r.status_code != 200:
        raise Fatal(f"join refused by {server}: {r.json().get('message', r.status_code)}")
    reply: dict[str, Any] = r.json()
    return reply


def _serve(server: StandinServer) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stop.wait()
    server.shutdown()
    server.server_close()
    log.info("stopped")
    return 0


def _tls(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _listen(addr: tuple[str, int], me: Identity, members: Members, tls: ssl.SSLContext) -> int:
    try:
        server = StandinServer(addr, me, members, tls)
    except OSError as exc:
        raise Fatal(f"cannot listen on {addr[0]}:{addr[1]}: {exc.strerror}") from None
    log.info("Running %s %s on https://%s:%d", me.role, me.node_name, *addr)
    return _serve(server)


def run(s: Settings) -> int:
    try:
        return _run(s)
    except Fatal as exc:
        # K3s's fatal lines carry the reason and nothing secret; so do ours.
        print(f'level=fatal msg="{exc}"', file=sys.stderr)  # noqa: T201
        return 1


def _run(s: Settings) -> int:
    node_ips = s.all("node-ip")
    bind = s.get("bind-address")
    node_ip = node_ips[0] if node_ips else bind
    if not node_ip or node_ip == "0.0.0.0":
        raise Usage("the stand-in needs --node-ip or --bind-address (it cannot read interfaces)")
    name = s.get("node-name") or socket.gethostname()
    data_dir = Path(s.get("data-dir") or "/var/lib/rancher/k3s")
    tok = _token(s)
    if s.command == "agent":
        return _run_agent(s, node_ip, name, data_dir, tok)

    host = bind or "0.0.0.0"
    port = int(s.get("https-listen-port") or 6443)
    url = f"https://{node_ip}:{port}"
    srv = data_dir / "server"
    tls_dir, cred = srv / "tls", srv / "cred"
    ca_crt, ca_key = tls_dir / "server-ca.crt", tls_dir / "server-ca.key"
    members = Members(srv / "members.json")
    joined = name in members.items
    reply: dict[str, Any] | None = None
    if s.get("server"):
        if tok is None:
            raise Fatal("--token is required to join a cluster")
        # Register on every start, as a kubelet recreates its deleted Node object; a node that
        # joined before may start while that server is down (its etcd has peers).
        try:
            reply = _join(s, node_ip, name, url, tok)
        except Unreachable as exc:
            if not joined:
                raise
            log.warning("%s; starting from local state", exc)
    if reply is not None and not joined:
        tls_dir.mkdir(parents=True, exist_ok=True)
        ca_crt.write_bytes(reply["ca_cert"].encode())
        _secret_file(ca_key, reply["ca_key"])
        _secret_file(cred / "passwd", tok.password if tok else "")
        _secret_file(cred / "admin-token", reply["admin_token"])
    if reply is not None:
        members.adopt({"version": reply["version"], "members": reply["members"]})
    if not ca_crt.exists():
        pki.make_ca(ca_crt, ca_key)
        password = tok.password if tok else tokens.generate_secret()
        _secret_file(cred / "passwd", password)
        _secret_file(cred / "admin-token", tokens.generate_secret())
    password = (cred / "passwd").read_text()
    if tok is not None and tok.password != password:
        raise Fatal("bootstrap data already found and encrypted with different token")

    ca_pem = ca_crt.read_bytes()
    _secret_file(srv / "token", tokens.format_token(ca_pem, password) + "\n")
    node_token = srv / "node-token"
    if not node_token.is_symlink():
        node_token.unlink(missing_ok=True)
        node_token.symlink_to("token")
    sans = [name, *node_ips, "127.0.0.1", "::1", "localhost", *s.all("tls-san")]
    pki.make_serving(ca_crt, ca_key, tls_dir / "serving.crt", tls_dir / "serving.key", sans)
    me = Identity(
        node_name=name,
        node_ip=node_ip,
        role="server",
        url=url,
        password=password,
        admin_token=(cred / "admin-token").read_text(),
        data_dir=data_dir,
        ca_pem=ca_pem,
        ca_key_pem=ca_key.read_bytes(),
    )
    if name not in members.items:
        members.upsert(
            {"name": name, "ip": node_ip, "role": "server", "url": url, "source": None,
             "joined_at": time.time()}
        )  # fmt: skip
    _write_kubeconfig(s, me, host, port)
    return _listen(
        (host, port), me, members, _tls(tls_dir / "serving.crt", tls_dir / "serving.key")
    )


def _write_kubeconfig(s: Settings, me: Identity, host: str, port: int) -> None:
    path = Path(s.get("write-kubeconfig") or "/etc/rancher/k3s/k3s.yaml")
    mode = int(s.get("write-kubeconfig-mode") or "0600", 8)
    api_host = "127.0.0.1" if host == "0.0.0.0" else host
    # JSON is YAML, and keeps the stand-in's kubectl free of a YAML library.
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "default",
                "cluster": {
                    "server": f"https://{api_host}:{port}",
                    "certificate-authority-data": base64.b64encode(me.ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": "default", "user": {"token": me.admin_token}}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "current-context": "default",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, json.dumps(doc, indent=1).encode())
    finally:
        os.close(fd)


def _run_agent(
    s: Settings, node_ip: str, name: str, data_dir: Path, tok: tokens.Token | None
) -> int:
    """Join as an agent, then answer /ping on NODE_IP:10250 (the kubelet's port) for Ready."""
    if tok is None:
        raise Fatal("--token is required for an agent")
    tls_dir = data_dir / "agent/tls"
    ca_crt, ca_key = tls_dir / "agent-ca.crt", tls_dir / "agent-ca.key"
    if not ca_crt.exists():
        pki.make_ca(ca_crt, ca_key)
    url = f"https://{node_ip}:{KUBELET_PORT}"
    reply = _join(s, node_ip, name, url, tok)
    members = Members(data_dir / "agent/members.json")
    members.adopt({"version": reply["version"], "members": reply["members"]})
    pki.make_serving(ca_crt, ca_key, tls_dir / "kubelet.crt", tls_dir / "kubelet.key", [node_ip])
    me = Identity(name, node_ip, "agent", url, tok.password, "", data_dir, b"", b"")
    return _listen(
        (node_ip, KUBELET_PORT), me, members, _tls(tls_dir / "kubelet.crt", tls_dir / "kubelet.key")
    )
