"""What a SQLite server imports: not the etcd client, nor httpx with it (httpx's command line
pulls rich, pygments and click: ~4.5 MB of the server's RSS, bench/README.md "Memory")."""

from __future__ import annotations

import subprocess
import sys


def test_the_server_imports_no_etcd_client_nor_httpx() -> None:
    code = (
        "import sys, pcloud.server.__main__, pcloud.server.serve, pcloud.server.app\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'rich')\n"
        "             or m.endswith(('store.etcd', 'store.etcd_watch', 'server.sync'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
