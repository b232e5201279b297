"""`pcloud-server migrate-to-etcd`: copy this server's SQLite store into etcd, checked.

The backend's `ha-enable` job runs it (with the coordination server stopped) so that the backend
needs none of the store's code: it reads the progress and the report from standard output, one
JSON object a line (`{"copied": N}` after each transaction, `{"report": {...}}` at the end). A
refusal or a failed check exits 1 with the reason on standard error; the source is never changed.

`--replace-finished`: a finished copy found in etcd is deleted and made again, because the
caller knows no server ever served from it (SQLite may have changed since).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from .base import StoreError
from .etcd import EtcdStore
from .migrate import clear, migrate, read_marker
from .sqlite import SqliteStore


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pcloud-server migrate-to-etcd",
        description="Copy the SQLite store into etcd and check the copy (stop the server first).",
    )
    p.add_argument("--sqlite", type=Path, required=True, help="the store: STATE_DIR/pcloud.db")
    p.add_argument("--etcd-endpoint", action="append", required=True, metavar="URL")
    p.add_argument("--etcd-ca", type=Path, required=True)
    p.add_argument("--etcd-cert", type=Path, required=True)
    p.add_argument("--etcd-key", type=Path, required=True)
    p.add_argument("--replace-finished", action="store_true")
    return p


def emit(line: dict[str, object]) -> None:
    print(json.dumps(line), flush=True)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if not args.sqlite.is_file():
        print(f"pcloud-server migrate-to-etcd: no store at {args.sqlite}", file=sys.stderr)
        return 2
    source = SqliteStore(args.sqlite)
    target = EtcdStore(
        args.etcd_endpoint, ca_file=args.etcd_ca, cert_file=args.etcd_cert,
        key_file=args.etcd_key, timeout=5.0,
    )  # fmt: skip
    try:
        if args.replace_finished:
            marker = read_marker(target)
            if marker is not None and marker.get("state") == "done":
                clear(target)
        report = migrate(source, target, after_batch=lambda n: emit({"copied": n}))
    except StoreError as exc:
        print(f"pcloud-server migrate-to-etcd: {exc}", file=sys.stderr)
        return 1
    finally:
        source.close()
        target.close()
    emit({"report": asdict(report)})
    return 0
