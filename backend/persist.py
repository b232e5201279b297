"""Everything the backend keeps on disk across restarts, written atomically with tight modes.

The state dir holds `node.json` (node id, node token, join link, address, network: 0600 because
of the token), `netmap.json` (the last merged netmap, so a restart with the coordination server
down can still reconcile the interface), `ca.pem` (the pinned network CA) and `prefs.json`
(`want_running`). The private key file belongs to `keys.py`. Every write goes to a temporary file
in the same directory, is fsynced and renamed over the old one, so a crash leaves either the old
or the new file, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pcloud.server.protocol import Netmap

SECRET_MODE = 0o600


def atomic_write(path: Path, data: bytes, mode: int = SECRET_MODE) -> None:
    """Replace `path` with `data`; the file never exists with a wider mode than `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)  # mkstemp makes 0600; set the wanted mode before any data lands
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # The rename must survive a power cut too.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass
class NodeInfo:
    """What registration gave us: enough to poll the netmap without logging in again."""

    node_id: int
    node_token: str
    server_url: str  # the join link, with its #fp=sha256:HEX
    address: str
    network: str  # the network CIDR, e.g. "10.0.0.0/24"
    hostname: str
    # Unix time after which the backend renews its node token with a key proof (half its
    # lifetime); None: unknown (an older registration), renewed at the next chance.
    renew_at: float | None = None

    def __repr__(self) -> str:  # keep the token out of any accidental log line
        return f"NodeInfo(node_id={self.node_id}, address={self.address}, server={self.server_url})"


@dataclass
class Prefs:
    want_running: bool = True


class Store:
    """Typed access to the files of one state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.node_path = state_dir / "node.json"
        self.netmap_path = state_dir / "netmap.json"
        self.ca_path = state_dir / "ca.pem"
        self.prefs_path = state_dir / "prefs.json"
        self.key_path = state_dir / "private.key"

    def ensure_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)

    def _read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None

    def load_node(self) -> NodeInfo | None:
        data = self._read_json(self.node_path)
        return NodeInfo(**data) if data else None

    def save_node(self, node: NodeInfo) -> None:
        atomic_write(self.node_path, json.dumps(asdict(node), indent=2).encode())

    def load_netmap(self) -> Netmap | None:
        try:
            return Netmap.model_validate_json(self.netmap_path.read_bytes())
        except FileNotFoundError:
            return None

    def save_netmap(self, netmap: Netmap) -> None:
        atomic_write(self.netmap_path, netmap.model_dump_json(indent=2).encode())

    def load_ca(self) -> str | None:
        try:
            return self.ca_path.read_text()
        except FileNotFoundError:
            return None

    def save_ca(self, pem: str) -> None:
        atomic_write(self.ca_path, pem.encode(), mode=0o644)

    def load_prefs(self) -> Prefs:
        data = self._read_json(self.prefs_path)
        return Prefs(**data) if data else Prefs()

    def save_prefs(self, prefs: Prefs) -> None:
        atomic_write(self.prefs_path, json.dumps(asdict(prefs)).encode(), mode=0o644)

    def forget_node(self) -> None:
        """Logout: drop the credentials and the netmap (the key pair and CA stay)."""
        for path in (self.node_path, self.netmap_path):
            path.unlink(missing_ok=True)
