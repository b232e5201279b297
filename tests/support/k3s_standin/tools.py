"""`k3s kubectl` and `k3s etcd-snapshot` of the stand-in: the few calls the driver makes.

kubectl reads the kubeconfig named by KUBECONFIG (the driver must set it; the default path is
K3s's) and talks to the stand-in server over TLS with the admin bearer token. Supported:
`get nodes [-o json|wide]`, `cordon|uncordon NODE`, `drain NODE [--ignore-daemonsets]
[--delete-emptydir-data] [--force] [--timeout=D]`, `delete node NODE`. Anything else exits 3 so a
test notices the driver asked for something the stand-in (and this project) never planned.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.support.k3s_standin.cluster import client_ssl
from tests.support.k3s_standin.settings import EXIT_NOT_EMULATED, Settings

_DRAIN_FLAGS = ("--ignore-daemonsets", "--delete-emptydir-data", "--force")


def _err(message: str, code: int = 1) -> int:
    print(message, file=sys.stderr)  # noqa: T201
    return code


def _client() -> tuple[httpx.Client, str]:
    path = os.environ.get("KUBECONFIG") or "/etc/rancher/k3s/k3s.yaml"
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(_err(f"error: cannot load kubeconfig {path}: {exc}")) from None
    cluster = doc["clusters"][0]["cluster"]
    ca = base64.b64decode(cluster["certificate-authority-data"])
    headers = {"Authorization": f"Bearer {doc['users'][0]['user']['token']}"}
    client = httpx.Client(verify=client_ssl(ca), headers=headers, timeout=10.0)
    return client, str(cluster["server"])


def _call(method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    client, server = _client()
    try:
        with client:
            return client.request(method, f"{server}{path}", json=body)
    except httpx.HTTPError as exc:
        raise SystemExit(
            _err(f"The connection to the server {server} was refused: {exc}")
        ) from None


def _change(name: str, method: str, body: dict[str, Any] | None = None) -> bool:
    r = _call(method, f"/api/v1/nodes/{name}", body)
    if r.status_code == 404:
        raise SystemExit(_err(f'Error from server (NotFound): nodes "{name}" not found'))
    if r.status_code != 200:
        raise SystemExit(_err(f"error: {r.status_code} {r.text}"))
    return True


def kubectl(args: Sequence[str]) -> int:
    a = list(args)
    if a[:2] == ["get", "nodes"]:
        fmt = a[2:]
        if fmt not in ([], ["-o", "json"], ["-o=json"], ["-o", "wide"]):
            return _err(f"stand-in kubectl: unsupported {' '.join(fmt)}", EXIT_NOT_EMULATED)
        r = _call("GET", "/api/v1/nodes")
        if r.status_code != 200:
            return _err(f"error: You must be logged in to the server ({r.status_code})")
        doc = r.json()
        if "json" in "".join(fmt):
            print(json.dumps(doc, indent=4))  # noqa: T201
        else:
            print(node_table(doc["items"]))  # noqa: T201
        return 0
    if len(a) == 2 and a[0] in ("cordon", "uncordon"):
        _change(a[1], "PATCH", {"spec": {"unschedulable": a[0] == "cordon"}})
        print(f"node/{a[1]} {a[0]}ed")  # noqa: T201
        return 0
    if len(a) >= 2 and a[0] == "drain":
        for extra in a[2:]:
            if extra not in _DRAIN_FLAGS and not extra.startswith("--timeout="):
                return _err(f"error: unknown flag: {extra}")
        _change(a[1], "PATCH", {"spec": {"unschedulable": True}})
        print(f"node/{a[1]} cordoned\nnode/{a[1]} drained")  # noqa: T201
        return 0
    if len(a) == 3 and a[:2] == ["delete", "node"]:
        _change(a[2], "DELETE")
        print(f'node "{a[2]}" deleted')  # noqa: T201
        return 0
    return _err(f"stand-in does not emulate `kubectl {' '.join(a)}`", EXIT_NOT_EMULATED)


def etcd_snapshot(sub: str, s: Settings) -> int:
    data_dir = Path(s.get("data-dir") or "/var/lib/rancher/k3s")
    members = data_dir / "server/members.json"
    if not members.exists():
        return _err(f'level=fatal msg="etcd datastore is not started in {data_dir}"')
    snap_dir = Path(s.get("dir") or data_dir / "server/db/snapshots")
    if sub == "save":
        node = s.get("node-name") or socket.gethostname()
        name = f"{s.get('name') or 'on-demand'}-{node}-{int(time.time())}"
        snap_dir.mkdir(parents=True, exist_ok=True)
        (snap_dir / name).write_bytes(members.read_bytes())
        print(f'level=info msg="Snapshot {name} saved."', file=sys.stderr)  # noqa: T201
        return 0
    print("Name Location Size Created")  # noqa: T201
    if snap_dir.is_dir():
        for p in sorted(snap_dir.iterdir()):
            st = p.stat()
            print(f"{p.name} file://{p} {st.st_size} {int(st.st_mtime)}")  # noqa: T201
    return 0


def node_table(items: Sequence[dict[str, Any]]) -> str:
    """`kubectl get nodes -o wide`'s first columns, aligned as kubectl aligns them."""
    rows = [["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]]
    now = time.time()
    for n in items:
        status = "Ready" if n["status"]["conditions"][0]["status"] == "True" else "NotReady"
        if n.get("spec", {}).get("unschedulable"):
            status += ",SchedulingDisabled"
        roles = sorted(
            k.rsplit("/", 1)[1]
            for k in n["metadata"].get("labels", {})
            if k.startswith("node-role.kubernetes.io/")
        )
        joined = (n.get("pcloudStandin") or {}).get("joinedAt")
        age = _age(now - float(joined)) if isinstance(joined, int | float) else "-"
        ip = next(
            (a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP"), "-"
        )
        rows.append([n["metadata"]["name"], status, ",".join(roles) or "<none>", age,
                     "stand-in", ip])  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)  # fmt: skip


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h"
