"""A small DNS server for tests: the "resolver the system had" that PCloud must forward to.

`python -m tests.support.dns_upstream --listen IP[:PORT] --record NAME=IPV4 ...` answers A
questions for the given names and NXDOMAIN for every other, over UDP and TCP, with dnslib's own
server (threads; fine for a test). Each answered question is logged as `asked NAME TYPE from IP`,
so a test can tell who asked.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class FixedResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, records: dict[str, str]) -> None:
        self.records = {name.lower().rstrip(".") + ".": ip for name, ip in records.items()}

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).lower()
        print(f"asked {qname} {QTYPE[request.q.qtype]} from {handler.client_address[0]}",
              flush=True)  # fmt: skip
        ip = self.records.get(qname)
        if ip is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in (QTYPE.A, QTYPE.ANY):
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(ip), ttl=60))
        return reply


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dns_upstream")
    p.add_argument("--listen", required=True, help="IP or IP:PORT (default port 53)")
    p.add_argument("--record", action="append", default=[], metavar="NAME=IPV4")
    args = p.parse_args(argv)
    host, _, port = args.listen.partition(":")
    records = dict(r.split("=", 1) for r in args.record)
    resolver = FixedResolver(records)
    quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    servers = [
        DNSServer(resolver, address=host, port=int(port or 53), tcp=tcp, logger=quiet)
        for tcp in (False, True)
    ]
    for server in servers:
        server.start_thread()
    print(f"dns upstream on {host}:{port or 53}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    for server in servers:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
