"""`GET /`: what a browser sees when someone opens the join link, a small page that says what
this is and how to install PCloud and join (the API itself lives under /api/v1)."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from .. import __version__
from ..security.tls import fingerprint

router = APIRouter(tags=["meta"])

# Nothing on the page runs or loads anything: a hostile Host header can only be text.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PCloud coordination server</title>
<style>body{{font-family:sans-serif;max-width:44em;margin:2em auto;padding:0 1em;line-height:1.5}}
pre{{background:#f3f3f3;padding:.6em;overflow-x:auto}}code{{background:#f3f3f3}}</style>
</head><body>
<h1>PCloud coordination server</h1>
<p>This is the coordination server of a private PCloud network (version {version}): a
self-hosted WireGuard mesh. Devices log in here once, then talk to each other directly through
encrypted tunnels. There is nothing to do in the browser.</p>
<h2>Join this network from a device</h2>
<ol>
<li>Install PCloud on the device and start its backend:
<pre>sudo pcloud-backend &amp;        # or: sudo systemctl enable --now pcloud-backend</pre></li>
<li>Log in with this server's join link (it pins the server's certificate):
<pre>pcloud login '{link}' --username YOUR-NAME</pre>
or with a pre-auth key from an admin (<code>--auth-key-file FILE</code>); the tray app
<code>pcloud-gui</code> has a Log in dialog that takes the same link.</li>
<li>Check it: <code>pcloud status</code>, then <code>pcloud ping HOSTNAME</code>.</li>
</ol>
<p>No account yet? An admin creates one on the server with
<code>pcloud-server admin users create NAME</code>.</p>
<p>Certificate fingerprint (SHA-256 of the network CA): <code>{fp}</code>. Your browser warns
about this server's certificate because the network signs its own; <code>pcloud login</code>
checks it against the join link instead.</p>
<p><a href="/docs">API documentation</a></p>
</body></html>
"""


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def welcome(request: Request) -> HTMLResponse:
    fp = fingerprint(request.app.state.ca_pem)
    base = str(request.base_url).rstrip("/")
    page = PAGE.format(
        version=escape(__version__),
        link=escape(f"{base}/#fp=sha256:{fp}"),
        fp=escape(fp),
    )
    return HTMLResponse(page, headers=HEADERS)
