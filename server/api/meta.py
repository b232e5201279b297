"""Unauthenticated routes: the network CA (for pinning) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .deps import StateDep

router = APIRouter(tags=["meta"])


@router.get("/api/v1/ca", response_class=PlainTextResponse)
async def ca_certificate(request: Request) -> PlainTextResponse:
    """The network CA in PEM. Public; a client checks its SHA-256 against the join link."""
    pem: bytes = request.app.state.ca_pem
    return PlainTextResponse(pem.decode(), media_type="application/x-pem-file")


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request, state: StateDep) -> Response:
    m = request.app.state.metrics
    m.refresh(state)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
