"""``GET /healthz`` (is the lake readable?) and ``GET /metrics`` (Prometheus text); no key needed, so
neither says where the lake is on the host.

Both are plain functions, which FastAPI runs in its own thread pool: neither waits on the SQL pool, so a
query being stopped never delays them.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from api.errors import ApiError, documented
from api.metrics import CONTENT_TYPE
from api.services import services
from store.errors import LakeError
from store.schema import TABLES

router = APIRouter(tags=["public"])


class Health(BaseModel):
    status: str
    tables: dict[str, int]  # table name -> latest committed version


@router.get("/healthz", response_model=Health, summary="Is the service up and the lake readable?",
            responses=documented(503))  # fmt: skip
def healthz(request: Request) -> Health:
    """200 when the lake folder is readable (its tables' latest versions listed), else 503."""
    lake = services(request).lake
    root = Path(lake.root)
    if lake.is_local and not (root.is_dir() and os.access(root, os.R_OK | os.X_OK)):
        raise ApiError(503, "lake_unavailable", "The lake folder is missing or unreadable")
    try:
        versions = {name: lake.delta_table(name).version() for name in TABLES if lake.has_table(name)}
    except LakeError as exc:  # no key is needed here: no host path in the answer
        raise ApiError(503, "lake_unavailable", str(exc).replace(lake.root, "<lake>")) from None
    return Health(status="ok", tables=versions)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}, "description": "Metrics"}},
)
def metrics(request: Request) -> Response:
    """Query counters and latency by outcome, and every ingest worker's counters (from its status file)."""
    return Response(services(request).metrics.exposition(), media_type=CONTENT_TYPE)
