"""`pcloud-server admin ...`: manage users, auth keys, nodes and policy from the server's shell.

Like `headscale users create`: it talks to the running server through the admin socket in the
state dir (root only, so every caller there is an admin); when no server is running it opens the
state dir itself and runs the same API in-process, so both paths share every check.
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

DEFAULT_STATE_DIR = Path("/var/lib/pcloud-server")


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
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
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
    nodes.add_parser("list")
    nd = nodes.add_parser("delete")
    nd.add_argument("node_id", type=int)
    nr = nodes.add_parser("set-role")
    nr.add_argument("node_id", type=int)
    nr.add_argument("role", choices=["client", "server"])

    policy = sub.add_parser("policy").add_subparsers(dest="cmd", required=True)
    policy.add_parser("get")
    ps = policy.add_parser("set")
    ps.add_argument("file", type=Path, help="policy file (HuJSON); - for stdin")
    pk = policy.add_parser("check")
    pk.add_argument("file", type=Path)
    policy.add_parser("reset")
    return p


def _client(state_dir: Path) -> httpx.AsyncClient:
    sock = state_dir / "admin.sock"
    if sock.exists():
        import socket

        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(sock))
            probe.close()
            return httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=str(sock)),
                base_url="http://admin",
                timeout=30,
            )
        except OSError:
            probe.close()
    if not (state_dir / "pcloud.db").exists() and not (state_dir / "server.json").exists():
        raise AdminError(f"no coordination server state in {state_dir} (wrong --state-dir?)")
    from .__main__ import load_settings, server_parser
    from .app import create_app

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


async def run(args: argparse.Namespace) -> Any:
    async with _client(args.state_dir) as c:
        api = "/api/v1"
        match (args.group, args.cmd):
            case ("users", "create"):
                if args.password_stdin or not sys.stdin.isatty():
                    password = sys.stdin.readline().rstrip("\n")
                else:
                    password = getpass.getpass(f"password for {args.username}: ")
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
                return _check(await c.delete(f"{api}/nodes/{args.node_id}"))
            case ("nodes", "set-role"):
                return _check(
                    await c.patch(f"{api}/nodes/{args.node_id}", json={"role": args.role})
                )
            case ("policy", "get"):
                return _check(await c.get(f"{api}/acl"))
            case ("policy", "set"):
                headers = {"content-type": "application/hujson"}
                return _check(
                    await c.put(f"{api}/acl", content=_read_text(args.file), headers=headers)
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
        t = Table("id", "hostname", "user", "role", "address", "online", "endpoints")
        for n in result:
            t.add_row(
                str(n["node_id"]),
                n["hostname"],
                n["user"],
                n["role"],
                n["address"],
                "yes" if n["online"] else "no",
                " ".join(n["endpoints"]),
            )
        console.print(t)
    elif key == ("policy", "get"):
        console.print(result["policy"] if result["policy"] is not None else "(default policy)")
    elif key == ("policy", "check"):
        console.print("ok" if result["ok"] else "REFUSED: " + "; ".join(result["errors"]))
        for ch in result["changes"]:
            console.print(
                f"{ch['node']}: +{','.join(ch['gains']) or '-'} -{','.join(ch['loses']) or '-'}"
            )
    elif isinstance(result, dict) and "username" in result:
        console.print(
            f"user {result['username']} created" + (" (admin)" if result["admin"] else "")
        )
    else:
        console.print("ok")


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
    except (StoreError, httpx.HTTPError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        return 1
    render(args, result, console)
    if args.group == "policy" and args.cmd == "check" and not result["ok"]:
        return 1
    return 0
