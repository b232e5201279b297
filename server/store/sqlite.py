"""SQLite (WAL) implementation of the store: one file in the server's state dir.

One table of JSON records keyed by (kind, key) and one row for the version counter. WAL with
synchronous=NORMAL keeps a commit well under a millisecond while still surviving a process crash;
the file is created 0600 because it holds password and token hashes.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .base import (
    KINDS,
    Claim,
    ClaimTaken,
    Delete,
    Kind,
    Op,
    Put,
    Snapshot,
    StoreError,
    StoreKind,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class SqliteStore:
    kind: StoreKind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            # Create the file 0600 before SQLite opens it, so it is never readable by others.
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        for suffix in ("-wal", "-shm"):
            side = Path(str(path) + suffix)
            if side.exists():
                os.chmod(side, 0o600)

    def load(self) -> Snapshot:
        records: dict[Kind, dict[str, dict[str, Any]]] = {k: {} for k in KINDS}
        for kind, key, value in self._db.execute("SELECT kind, key, value FROM records"):
            if kind in records:
                records[kind][key] = json.loads(value)
        row = self._db.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
        return Snapshot(version=int(row[0]) if row else 0, records=records)

    async def aload(self) -> Snapshot:
        return self.load()  # a local file: not worth a thread hop

    async def acommit(self, ops: Iterable[Op], version: int) -> None:
        # SQLite commits in well under a millisecond: not worth a thread hop.
        self.commit(ops, version)

    def commit(self, ops: Iterable[Op], version: int) -> None:
        claim: Claim | None = None
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for op in ops:
                if isinstance(op, Claim):
                    # A plain INSERT: the (kind, key) primary key is the UNIQUE check that makes
                    # the claim fail, and the whole transaction with it, when the key exists.
                    claim = op
                    self._db.execute(
                        "INSERT INTO records (kind, key, value) VALUES (?, ?, ?)",
                        (op.kind, op.key, json.dumps(op.value, separators=(",", ":"))),
                    )
                    claim = None
                elif isinstance(op, Put):
                    self._db.execute(
                        "INSERT OR REPLACE INTO records (kind, key, value) VALUES (?, ?, ?)",
                        (op.kind, op.key, json.dumps(op.value, separators=(",", ":"))),
                    )
                elif isinstance(op, Delete):
                    self._db.execute(
                        "DELETE FROM records WHERE kind = ? AND key = ?", (op.kind, op.key)
                    )
            self._db.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('version', ?)", (version,)
            )
            self._db.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            self._db.execute("ROLLBACK")
            if claim is not None:
                raise ClaimTaken(claim.kind, claim.key) from exc
            raise StoreError(f"sqlite commit failed: {exc}") from exc
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            raise StoreError(f"sqlite commit failed: {exc}") from exc

    def close(self) -> None:
        self._db.close()
