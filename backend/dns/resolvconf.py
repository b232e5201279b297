"""/etc/resolv.conf without systemd-resolved: a managed, marked rewrite and its exact undo.

`install` saves the original (bytes, mode, owner, or the symlink it was) in the state dir and
fsyncs that backup *before* the file changes, then writes ours: our resolver first, the original
nameservers after it (glibc moves on at once when our port is closed, so a crashed backend leaves
outside names working), our domain first in `search`, the original options. `restore` puts the
original back byte for byte with its mode and owner, or leaves a file someone else wrote since
(a DHCP client) alone. A backend killed with SIGKILL restores at its next start (`recover`).

/etc/resolv.conf is replaced by rename, or rewritten in place where it is a mount point (a bind
mount in a container or a lab host refuses renames with EBUSY).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pcloud.backend.persist import atomic_write

log = logging.getLogger(__name__)

MARKER = "# Managed by PCloud"
MAXNS = 3  # glibc reads at most three nameserver lines
DEFAULT_NAMESERVER = "127.0.0.1"  # resolv.conf(5): what glibc uses when the file names none


@dataclass
class ResolvConf:
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


def parse(text: str) -> ResolvConf:
    """The parts of resolv.conf(5) we carry over. The last `search`/`domain` line wins, as in
    glibc; comments start with '#' or ';'."""
    conf = ResolvConf()
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) < 2:
            continue
        key, args = words[0], words[1:]
        if key == "nameserver":
            conf.nameservers.append(args[0])
        elif key in ("search", "domain"):
            conf.search = args if key == "search" else args[:1]
        elif key == "options":
            conf.options += args
    return conf


def render(listen: str, domain: str, original: ResolvConf, backup_dir: Path) -> bytes:
    """Our resolv.conf: clearly marked, our resolver first, our search domain first."""
    fallbacks = [ns for ns in original.nameservers if ns != listen][: MAXNS - 1]
    search = [domain] + [d for d in original.search if d.rstrip(".") != domain]
    # `rotate` would send our names to the other servers, which answer NXDOMAIN for them.
    options = [o for o in original.options if o != "rotate"]
    lines = [
        f"{MARKER} (pcloud-backend): this device's network names ({domain}) resolve through",
        f"# {listen}. The previous file is kept in {backup_dir} and comes back byte for byte on",
        "# `pcloud down`, logout, uninstall and the next start after a crash. Do not edit.",
        f"nameserver {listen}",
        *(f"nameserver {ns}" for ns in fallbacks),
        f"search {' '.join(search)}",
    ]
    if options:
        lines.append(f"options {' '.join(options)}")
    return ("\n".join(lines) + "\n").encode()


def is_managed(data: bytes) -> bool:
    return data.startswith(MARKER.encode())


class ManagedResolvConf:
    """The managed rewrite of one resolver file, with its backup under `state_dir/dns`."""

    def __init__(self, path: Path, state_dir: Path) -> None:
        self.path = path
        self.dir = state_dir / "dns"
        self.backup = self.dir / "resolv.conf.orig"
        self.meta = self.dir / "resolv.conf.json"

    # -- reading ---------------------------------------------------------------------------

    def current(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def managed_now(self) -> bool:
        data = self.current()
        return data is not None and is_managed(data)

    def original(self) -> ResolvConf:
        """What the system had: the backup while we manage the file, else the file itself."""
        if self.meta.exists() and self.managed_now():
            meta = json.loads(self.meta.read_text())
            if meta.get("kind") == "file":
                return parse(self.backup.read_bytes().decode(errors="replace"))
            if meta.get("kind") == "absent":
                return ResolvConf()
        data = self.current()
        return parse(data.decode(errors="replace")) if data is not None else ResolvConf()

    # -- changing --------------------------------------------------------------------------

    def install(self, content: bytes) -> None:
        """Write `content` (ours), saving the original first unless we already hold it."""
        if not is_managed(content):
            raise ValueError("refusing to write a resolver file without the PCloud marker")
        if self.meta.exists() and not self.managed_now():
            # A stale backup: the file was never changed (crash right after the backup) or
            # someone replaced ours since. The file as it is now is the original.
            self._drop_backup()
        if not self.meta.exists():
            self._save_original()
        meta = json.loads(self.meta.read_text())
        mode = meta.get("mode", 0o644) if meta["kind"] == "file" else 0o644
        _write(self.path, content, mode, meta.get("uid", 0), meta.get("gid", 0))
        log.info("resolver file %s now points at PCloud's resolver", self.path)

    def restore(self) -> bool:
        """Put the original back; True when the file changed. Safe to call at any time."""
        if not self.meta.exists():
            return False
        meta = json.loads(self.meta.read_text())
        if not self.managed_now():
            log.warning(
                "%s was rewritten by something else while PCloud managed it; leaving it as it is",
                self.path,
            )
            self._drop_backup()
            return False
        kind = meta["kind"]
        if kind == "symlink":
            tmp = self.path.with_name(f".{self.path.name}.pcloud-restore")
            tmp.unlink(missing_ok=True)
            os.symlink(meta["target"], tmp)
            os.replace(tmp, self.path)
        elif kind == "absent":
            self.path.unlink(missing_ok=True)
        else:
            _write(self.path, self.backup.read_bytes(), meta["mode"], meta["uid"], meta["gid"])
        self._drop_backup()
        log.info("restored the original %s", self.path)
        return True

    def _save_original(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            meta: dict[str, object] = {"kind": "absent"}
        else:
            if stat.S_ISLNK(st.st_mode):
                meta = {"kind": "symlink", "target": os.readlink(self.path)}
            else:
                meta = {
                    "kind": "file", "mode": stat.S_IMODE(st.st_mode),
                    "uid": st.st_uid, "gid": st.st_gid,
                }  # fmt: skip
                atomic_write(self.backup, self.path.read_bytes())
        meta["path"] = str(self.path)
        # The meta file last: its presence means "a complete backup exists" (both fsynced).
        atomic_write(self.meta, json.dumps(meta).encode())

    def _drop_backup(self) -> None:
        self.meta.unlink(missing_ok=True)
        self.backup.unlink(missing_ok=True)


def _write(path: Path, data: bytes, mode: int, uid: int, gid: int) -> None:
    """Replace `path` atomically with `data` owned uid:gid with `mode`; in place if `path` is a
    mount point (rename gives EBUSY there)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".pcloud", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        if os.geteuid() == 0:
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
            return
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.EXDEV) or path.is_symlink():
                raise
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, mode)
