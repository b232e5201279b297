"""`pcloud-server admin ...`: manage users, auth keys, nodes and policy from the server's shell.

Like `headscale users create`: it talks to the running server through the admin socket in the
state dir (root only, so every caller there is an admin); when no server is running it opens the
state dir itself and runs the same API in-process, so both paths share every check. The state
dir defaults to the one layout every install uses (`layout.STATE_DIR`). Errors are one line
naming the problem and the fix, never a traceback (a hung server is a timeout message).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import sys
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from . import __version__
from .layout import STATE_DIR, admin_socket, holds_server

DEFAULT_STATE_DIR = STATE_DIR
# A running server answers an admin call in milliseconds; this long means it is hung.
TIMEOUT_S = 20.0


class AdminError(Exception):
    pass


# What to do when the shared store has no quorum: the CLI's answer to a 503 store_unavailable
# (or to a store it cannot read at all), instead of a bare error or a traceback.
QUORUM_ADVICE = (
    "quorum is lost: too few of the coordination store's etcd members answer, so no change can "
    "be made (reads keep being served). Bring the other servers back online; if they are gone "
    "for good, run `pcloud ha force-new-cluster --yes-i-lost-the-other-servers` on this server "
    "(its etcd member becomes the whole cluster, with its data), then `pcloud ha join` on new "
    "servers."
)


def parse_duration(text: str) -> int:
    m = re.fullmatch(r"(\d+)([smhdw]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 24h, 7d")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    return int(m.group(1)) * unit


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pcloud-server admin", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"pcloud-server {__version__}")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"the server's state dir (default {DEFAULT_STATE_DIR}, where install-server puts it)",
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument(
        "--timeout",
        type=float,
        default=TIMEOUT_S,
        metavar="SECONDS",
        help=f"give up on a server that does not answer (default {TIMEOUT_S:.0f})",
    )
    sub = p.add_subparsers(dest="group", required=True)

    users = sub.add_parser("users").add_subparsers(dest="cmd", required=True)
    uc = users.add_parser("create")
    uc.add_argument("username")
    uc.add_argument("--admin", action="store_true")
    uc.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    users.add_parser("list")
    ud = users.add_parser("delete")
    ud.add_argument("username")

    keys = sub.add_parser("auth-keys").add_subparsers(dest="cmd", required=True)
    kc = keys.add_parser("create")
    kc.add_argument("--user", required=True)
    kc.add_argument("--reusable", action="store_true")
    kc.add_argument("--ephemeral", action="store_true")
    kc.add_argument("--expiration", type=parse_duration, default=3600, help="e.g. 1h, 7d")
    kc.add_argument("--role", choices=["client", "server"], default="client")
    kc.add_argument("--tags", default="", help="comma-separated, e.g. tag:server,tag:nas")
    keys.add_parser("list")
    ke = keys.add_parser("expire")
    ke.add_argument("prefix")

    nodes = sub.add_parser("nodes").add_subparsers(dest="cmd", required=True)
    nodes.add_parser("list", help="every node with its tags")
    node_help = "the node's id or hostname (see `nodes list`)"
    nd = nodes.add_parser("delete", help="remove a node from the network")
    nd.add_argument("node", help=node_help)
    nr = nodes.add_parser("set-role", help="make a node a server or a client")
    nr.add_argument("node", help=node_help)
    nr.add_argument("role", choices=["client", "server"])
    nt = nodes.add_parser("tag", help="set a node's tags (replaces them; '' clears)")
    nt.add_argument("node", help=node_help)
    nt.add_argument("tags", help="comma-separated, e.g. tag:server,tag:nas")
    nn = nodes.add_parser("rename", help="new hostname (and DNS name HOSTNAME.<domain>)")
    nn.add_argument("node", help=node_help)
    nn.add_argument("hostname")

    policy = sub.add_parser("policy").add_subparsers(dest="cmd", required=True)
    policy.add_parser("get")
    ps = policy.add_parser("set")
    ps.add_argument("file", type=Path, help="policy file (HuJSON); - for stdin")
    ps.add_argument(
        "--force",
        action="store_true",
        help="apply even if servers lose reach to each other (the built-in rule stays)",
    )
    pk = policy.add_parser("check")
    pk.add_argument("file", type=Path)
    policy.add_parser("reset")
    return p


def _client(state_dir: Path, timeout: float) -> httpx.AsyncClient:
    sock = admin_socket(state_dir)
    if sock.exists():
        import socket

        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(sock))
            probe.close()
            return httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=str(sock)),
                base_url="http://admin",
                timeout=timeout,
            )
        except OSError:
            probe.close()
    if not holds_server(state_dir):
        hint = (
            "install one with `pcloud install-server`"
            if state_dir == DEFAULT_STATE_DIR
            else f"the default is {DEFAULT_STATE_DIR}"
        )
        raise AdminError(f"no coordination server state in {state_dir}: {hint}")
    from .app import create_app
    from .arguments import load_settings, server_parser

    settings = load_settings(server_parser().parse_args(["--state-dir", str(state_dir)]))
    app = create_app(settings, local_admin=True)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin")


def _check(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        try:
            error = resp.json()["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "", resp.text
        if code == "store_unavailable":
            raise AdminError(f"{QUORUM_ADVICE}\n({message})")
        raise AdminError(message)
    if resp.status_code == 204 or not resp.content:
        return None
    return resp.json()


def _read_text(path: Path) -> str:
    return sys.stdin.read() if str(path) == "-" else path.read_text()


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise AdminError(
                "no password on stdin: pipe one in (echo PASSWORD | ... --password-stdin) "
                "or run the command in a terminal to be prompted"
            )
        return password
    password = getpass.getpass(f"password for {args.username}: ")
    if getpass.getpass("again: ") != password:
        raise AdminError("the two passwords differ; nothing was created")
    return password


async def _node_id(c: httpx.AsyncClient, node: str) -> int:
    """A node named by id or hostname (hostnames are what `nodes list` and netmaps show)."""
    if node.isdigit():
        return int(node)
    found = [n["node_id"] for n in _check(await c.get("/api/v1/nodes")) if n["hostname"] == node]
    if not found:
        raise AdminError(f"no node named {node!r} (see `pcloud-server admin nodes list`)")
    if len(found) > 1:
        ids = ", ".join(str(i) for i in found)
        raise AdminError(f"{len(found)} nodes are named {node!r} (ids {ids}): give the id")
    return int(found[0])


async def run(args: argparse.Namespace) -> Any:
    async with _client(args.state_dir, args.timeout) as c:
        api = "/api/v1"
        match (args.group, args.cmd):
            case ("users", "create"):
                password = _read_password(args)
                body = {"username": args.username, "password": password, "admin": args.admin}
                return _check(await c.post(f"{api}/users", json=body))
            case ("users", "list"):
                return _check(await c.get(f"{api}/users"))
            case ("users", "delete"):
                return _check(await c.delete(f"{api}/users/{args.username}"))
            case ("auth-keys", "create"):
                tags = [t for t in args.tags.split(",") if t]
                body = {
                    "user": args.user,
                    "reusable": args.reusable,
                    "ephemeral": args.ephemeral,
                    "expires_in_s": args.expiration,
                    "role": args.role,
                    "tags": tags,
                }
                return _check(await c.post(f"{api}/auth-keys", json=body))
            case ("auth-keys", "list"):
                return _check(await c.get(f"{api}/auth-keys"))
            case ("auth-keys", "expire"):
                return _check(await c.delete(f"{api}/auth-keys/{args.prefix}"))
            case ("nodes", "list"):
                return _check(await c.get(f"{api}/nodes"))
            case ("nodes", "delete"):
                return _check(await c.delete(f"{api}/nodes/{await _node_id(c, args.node)}"))
            case ("nodes", "set-role" | "tag" | "rename"):
                change: dict[str, Any]
                if args.cmd == "set-role":
                    change = {"role": args.role}
                elif args.cmd == "tag":
                    change = {"tags": [t.strip() for t in args.tags.split(",") if t.strip()]}
                else:
                    change = {"hostname": args.hostname}
                node_id = await _node_id(c, args.node)
                return _check(await c.patch(f"{api}/nodes/{node_id}", json=change))
            case ("policy", "get"):
                return _check(await c.get(f"{api}/acl"))
            case ("policy", "set"):
                headers = {"content-type": "application/hujson"}
                return _check(
                    await c.put(
                        f"{api}/acl",
                        content=_read_text(args.file),
                        headers=headers,
                        params={"force": "true"} if args.force else None,
                    )
                )
            case ("policy", "check"):
                headers = {"content-type": "application/hujson"}
                return _check(
                    await c.post(f"{api}/acl/check", content=_read_text(args.file), headers=headers)
                )
            case ("policy", "reset"):
                return _check(await c.delete(f"{api}/acl"))
    raise AdminError(f"unknown command {args.group} {args.cmd}")


def render(args: argparse.Namespace, result: Any, console: Console) -> None:
    if args.json:
        console.print_json(json.dumps(result if result is not None else {"ok": True}))
        return
    key = (args.group, args.cmd)
    if key == ("users", "list"):
        t = Table("user", "admin", "created")
        for u in result:
            t.add_row(u["username"], "yes" if u["admin"] else "", u["created_at"][:19])
        console.print(t)
    elif key == ("auth-keys", "list"):
        t = Table("prefix", "user", "role", "reusable", "ephemeral", "used", "tags", "expires")
        for k in result:
            t.add_row(
                k["prefix"],
                k["user"],
                k["role"],
                str(k["reusable"]).lower(),
                str(k["ephemeral"]).lower(),
                str(k["used"]).lower(),
                ",".join(k["tags"]),
                k["expires_at"][:19],
            )
        console.print(t)
    elif key == ("auth-keys", "create"):
        console.print(f"{result['key']}")
        console.print(
            f"[dim]prefix {result['prefix']}, expires {result['expires_at'][:19]}; "
            "shown once[/dim]",
            highlight=False,
        )
    elif key == ("nodes", "list"):
        t = Table("id", "hostname", "user", "role", "tags", "address", "online", "endpoints")
        for n in result:
            t.add_row(
                str(n["node_id"]),
                n["hostname"],
                n["user"],
                n["role"],
                ",".join(n.get("tags") or []),
                n["address"],
                "yes" if n["online"] else "no",
                " ".join(n["endpoints"]),
            )
        console.print(t)
    elif key[0] == "nodes" and isinstance(result, dict) and "hostname" in result:
        tags = ",".join(result.get("tags") or []) or "no tags"
        console.print(
            f"node {result['node_id']}: {result['hostname']}, {result['role']}, {tags}",
            highlight=False,
        )
    elif key == ("policy", "get"):
        console.print(result["policy"] if result["policy"] is not None else "(default policy)")
    elif key == ("policy", "check"):
        for line in policy_check_lines(result):
            console.print(line, highlight=False, markup=False)
        for line in result.get("builtin") or []:
            console.print(f"built in: {line}", highlight=False, markup=False)
    elif key == ("policy", "set"):
        console.print("ok: policy applied", highlight=False)
        for warning in result.get("warnings") or []:
            console.print(f"warning: {warning}", highlight=False, markup=False)
    elif isinstance(result, dict) and "username" in result:
        console.print(
            f"user {result['username']} created" + (" (admin)" if result["admin"] else "")
        )
    else:
        console.print("ok")


def policy_check_lines(result: dict[str, Any]) -> list[str]:
    """The dry run in words: verdict (with why each test failed), warnings, who gains or loses
    whom."""
    lines = ["ok: nothing applied (dry run)" if result["ok"] else "REFUSED:"]
    lines += [f"  {e}" for e in result["errors"]] if not result["ok"] else []
    lines += [f"warning: {w}" for w in result.get("warnings") or []]
    if result["changes"]:
        lines.append("peer changes:")
    for ch in result["changes"]:
        parts = []
        if ch["gains"]:
            parts.append("gains " + ", ".join(ch["gains"]))
        if ch["loses"]:
            parts.append("loses " + ", ".join(ch["loses"]))
        lines.append(f"  {ch['node']} " + "; ".join(parts))
    if not result["changes"] and result["ok"]:
        lines.append("no node gains or loses a peer")
    return lines


def describe_http_error(exc: httpx.HTTPError, state_dir: Path, timeout: float) -> str:
    """A transport failure as one line with the fix (a hung server times out)."""
    if isinstance(exc, httpx.TimeoutException):
        return (
            f"the coordination server (admin socket {admin_socket(state_dir)}) did not answer "
            f"within {timeout:g} s: it may be hung; check `systemctl status pcloud-server` "
            "and restart it"
        )
    return f"cannot talk to the coordination server via {admin_socket(state_dir)}: {exc}"


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    # Piped output (scripts, tests) must not be cut at 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    from .store.base import StoreError, Unavailable

    # Not wrapped at 80 columns: scripts and tests read the message (a command in it) whole.
    err = Console(stderr=True, soft_wrap=True)
    try:
        result = asyncio.run(run(args))
    except (AdminError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        return 1
    except Unavailable as exc:
        # No server running and the store cannot be read in-process: no quorum either.
        err.print(f"[red]error:[/red] {QUORUM_ADVICE}\n({exc})", highlight=False)
        return 1
    except StoreError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        return 1
    except httpx.HTTPError as exc:
        err.print(
            f"[red]error:[/red] {describe_http_error(exc, args.state_dir, args.timeout)}",
            highlight=False,
        )
        return 1
    except KeyboardInterrupt:
        return 130
    render(args, result, console)
    if args.group == "policy" and args.cmd == "check" and not result["ok"]:
        return 1
    return 0
