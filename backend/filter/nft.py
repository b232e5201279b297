"""Runs `nft -j` batches: the only place the backend touches nftables.

Each call is one `nft -j -f -` process fed one JSON batch, which nftables applies as a single
transaction (all or nothing). It acts in the network namespace the backend runs in.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import Any

TIMEOUT_S = 10.0


class NftError(Exception):
    """nftables refused the batch or could not be run; the message says why."""


async def run(batch: list[dict[str, Any]], *, nft: str = "nft") -> str:
    """Apply one batch; returns nft's output. Raises NftError."""
    exe = shutil.which(nft)
    if exe is None:
        raise NftError(f"{nft!r} not found: install the nftables package")
    doc = json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}, *batch]})
    try:
        proc = await asyncio.create_subprocess_exec(
            exe,
            "-j",
            "-f",
            "-",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(TIMEOUT_S):
            out, err = await proc.communicate(doc.encode())
    except (OSError, TimeoutError) as e:
        raise NftError(f"running nft failed: {e}") from None
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip().splitlines()
        raise NftError(f"nft refused the rules: {' '.join(message[:3]) or proc.returncode}")
    return out.decode(errors="replace")


async def list_tables(*, nft: str = "nft") -> list[tuple[str, str]]:
    """(family, name) of every table in this namespace."""
    exe = shutil.which(nft)
    if exe is None:
        raise NftError(f"{nft!r} not found: install the nftables package")
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-j",
        "list",
        "tables",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(TIMEOUT_S):
        out, err = await proc.communicate()
    if proc.returncode != 0:
        raise NftError(err.decode(errors="replace").strip())
    items = json.loads(out or b'{"nftables": []}').get("nftables", [])
    return [(i["table"]["family"], i["table"]["name"]) for i in items if "table" in i]
