"""Unauthenticated routes: the network CA (for pinning) and Prometheus metrics.

`/metrics` is on its own router: the app includes it only when `Settings.metrics_open` (by
default only on a server that listens on loopback alone), since its counters tell anyone who can
reach the port how many devices exist and how many logins failed.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .deps import StateDep

router = APIRouter(tags=["meta"])
metrics_router = APIRouter(tags=["meta"])


@router.get("/api/v1/ca", response_class=PlainTextResponse)
async def ca_certificate(request: Request) -> PlainTextResponse:
    """The network CA in PEM. Public; a client checks its SHA-256 against the join link."""
    pem: bytes = request.app.state.ca_pem
    return PlainTextResponse(pem.decode(), media_type="application/x-pem-file")


@metrics_router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request, state: StateDep) -> Response:
    m = request.app.state.metrics
    m.refresh(state)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
