"""Coordination client pieces that need no server: join links, fingerprints, error mapping,
backoff and failover order. (Talking to the real server: tests/integration/test_backend_*.)"""

from __future__ import annotations

import hashlib
import random
import ssl

import httpx
import pytest

from pcloud.backend.control.client import ControlError, ControlUnreachable, _error
from pcloud.backend.control.pinning import (
    PinningError,
    base_url,
    ca_fingerprint,
    parse_join_link,
    pinned_context,
)
from pcloud.backend.control.poller import BACKOFF_CAP_S, ServerList, backoff_delay
from pcloud.shared import pki

FP = "ab" * 32


def test_parse_join_link() -> None:
    link = parse_join_link(f"https://192.168.0.11:8443/#fp=sha256:{FP.upper()}")
    assert link.base_url == "https://192.168.0.11:8443" and link.fingerprint == FP
    assert parse_join_link(f"https://[fd00::1]:8443#fp=sha256:{FP}").base_url == (
        "https://[fd00::1]:8443"
    )


@pytest.mark.parametrize(
    "bad",
    [
        f"http://h:1/#fp=sha256:{FP}",
        "https://h:1/",
        f"https://h:1/#fp=sha1:{FP}",
        "https://h:1/#fp=sha256:abc",
        "not a url",
    ],
)
def test_bad_join_links_are_refused(bad: str) -> None:
    with pytest.raises(PinningError):
        parse_join_link(bad)


def test_base_url() -> None:
    assert base_url("https://h:1/x/y?z#fp=1") == "https://h:1"


def self_signed_pem() -> str:
    ca = pki.issue("test CA", pki.new_key(), days=1, ca=True, path_length=0)
    return pki.cert_pem(ca).decode()


def test_fingerprint_is_sha256_of_der_and_context_trusts_only_it() -> None:
    pem = self_signed_pem()
    assert ca_fingerprint(pem) == hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    ctx = pinned_context(pem)
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert len(ctx.get_ca_certs()) == 1  # no system roots
    with pytest.raises(PinningError):
        ca_fingerprint("garbage")


def test_error_mapping() -> None:
    body = {"error": {"code": "bad_key", "message": "auth key expired"}}
    err = _error(httpx.Response(401, json=body), "https://h:1")
    assert isinstance(err, ControlError) and err.status == 401 and err.code == "bad_key"
    assert "auth key expired" in str(err)
    assert isinstance(_error(httpx.Response(503, text="down"), "https://h:1"), ControlUnreachable)
    odd = _error(httpx.Response(404, text="<html>"), "https://h:1")
    assert isinstance(odd, ControlError) and odd.code == "http_error"


def test_backoff_is_capped_jittered_and_never_zero() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(a, rng=rng) for a in range(1, 40)]
    assert all(0 < d <= BACKOFF_CAP_S for d in delays)
    assert len({round(d, 6) for d in delays}) > 30  # jittered, not lock-step
    assert backoff_delay(1, rng=random.Random(0)) <= 1.0
    assert min(backoff_delay(30, rng=random.Random(i)) for i in range(50)) >= BACKOFF_CAP_S / 10


def test_server_list_failover_order() -> None:
    servers = ServerList("https://a:1")
    assert servers.advance() == "https://a:1"  # alone: retry the same
    servers.update(["https://b:1", "https://a:1/", "https://c:1"])
    assert servers.current == "https://a:1"
    assert [servers.advance() for _ in range(3)] == ["https://c:1", "https://b:1", "https://a:1"]
    servers.update(["https://d:1"])  # the current one stays, even if no longer listed
    assert servers.urls == ["https://a:1", "https://d:1"]


def test_one_reading_of_the_error_body() -> None:
    from pcloud.backend.control.errors import error_of

    err = error_of(409, b'{"error": {"code": "taken", "message": "name taken"}}')
    assert (err.status, err.code, err.message) == (409, "taken", "name taken")
    bare = error_of(502, b"<html>bad gateway</html>", "Bad Gateway")
    assert (bare.code, bare.message) == ("http_error", "<html>bad gateway</html>")
    assert error_of(500, b"", "Internal Server Error").message == "Internal Server Error"


def test_relay_refuses_routes_off_the_list() -> None:
    from pcloud.backend.control.relay import NotRelayed, check

    assert check("get", "/nodes") == "GET"
    with pytest.raises(NotRelayed, match="not one of the routes"):
        check("DELETE", "/cluster/servers/self")
