"""Real etcd members for tests, on loopback only: 127.0.0.2-4 stand in for overlay addresses.

Each member gets its own leaf from a throwaway network CA and a data dir under the test's tmp dir;
every member is stopped by PID at the end, so no etcd outlives a test.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pcloud.server.security.tls import TlsFiles, ensure_ca
from pcloud.server.store.etcd import EtcdStore
from pcloud.shared.etcd.member import MemberSpec, MemberTls, etcd_argv, issue_member_cert
from tests.support.etcd_member import EtcdMember
from tests.support.ports import free_port

ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")

needs_etcd = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed")


@dataclass
class Cluster:
    root: Path
    ca: TlsFiles
    client_tls: MemberTls
    specs: dict[str, MemberSpec] = field(default_factory=dict)
    members: dict[str, EtcdMember] = field(default_factory=dict)
    stores: list[EtcdStore] = field(default_factory=list)

    def spec(self, name: str, address: str) -> MemberSpec:
        # etcd checks a peer's client certificate against the connection's source address; on
        # loopback the kernel picks 127.0.0.1 as the source whatever address is dialled (on the
        # overlay it is the member's own address), so the test leaves carry it too.
        names = [address, "127.0.0.1"]
        tls = issue_member_cert(self.ca.ca_cert, self.ca.ca_key, name, names, self.root / "tls")
        spec = MemberSpec(
            name=name,
            address=address,
            data_dir=self.root / name,
            tls=tls,
            client_port=free_port(address),
            peer_port=free_port(address),
        )
        self.specs[name] = spec
        return spec

    def start(self, spec: MemberSpec, argv: list[str]) -> EtcdMember:
        member = EtcdMember(spec, argv)
        self.members[spec.name] = member
        member.start()
        return member

    def endpoints(self) -> list[str]:
        return [s.client_url for s in self.specs.values()]

    def store(self, **kwargs: Any) -> EtcdStore:
        t = self.client_tls
        store = EtcdStore(
            self.endpoints(), ca_file=t.ca, cert_file=t.cert, key_file=t.key, **kwargs
        )
        self.stores.append(store)
        return store

    def stop(self) -> None:
        for store in self.stores:
            store.close()
        for member in self.members.values():
            member.stop(timeout=5)


@contextmanager
def cluster(root: Path, size: int) -> Iterator[Cluster]:
    """`size` members started together (initial-cluster-state new), healthy on return."""
    ca = TlsFiles.in_dir(root / "ca")
    ensure_ca(ca, "test")
    client = issue_member_cert(ca.ca_cert, ca.ca_key, "client", ["127.0.0.1"], root / "tls")
    c = Cluster(root=root, ca=ca, client_tls=client)
    try:
        specs = [c.spec(f"m{i + 1}", ADDRESSES[i]) for i in range(size)]
        initial = {s.name: s.peer_url for s in specs}
        for s in specs:
            c.start(s, etcd_argv(s, initial, "new"))
        for m in c.members.values():
            m.wait_healthy(30)
        yield c
    finally:
        c.stop()
