"""``create_app(settings)``: the FastAPI service over one lake.

Routes and the least role each needs (``api.auth``):

    GET  /healthz                       public    is the lake readable
    GET  /metrics                       public    Prometheus text
    POST /v1/sql                        analyst   one SQL statement, streamed (json, csv, parquet, arrow)
    GET  /v1/tables                     analyst   tables and views with column docs and units
    GET  /v1/tables/{name}/sample       analyst   a few rows of one
    GET  /v1/ingest/status              operator  ingest workers and devices
    GET  /v1/devices                    operator  devices seen by ingest
    POST /v1/compact                    operator  deduplicate and merge small files
    GET  /                              public    the open-data catalog page (HTML, ja/en)
    GET  /v1/datasets[/{id}[/releases[/{version}[/{file}]]]]
                                        public    published datasets, releases, files (api.datasets)

Plus ``/openapi.json`` and ``/docs``.  The lifespan starts the SQL thread pool and closes it and the
sandbox at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import catalog, datasets, errors, health, ingest, sql, tables
from api.limits import BodyLimit
from api.metrics import ApiMetrics
from api.runner import QueryRunner
from api.services import Services
from store.keys import KeyStore
from store.lake import Lake
from store.query import analyst_sandbox
from store.sandbox import SandboxLimits
from store.settings import Settings

DESCRIPTION = """SQL over the Haneda-Kamata corridor telemetry lake, ingest status and compaction; the
published open datasets and their files for everyone (`/v1/datasets`, the catalog page at `/`).

Send an API key as `Authorization: Bearer <key>` (`corridorhub keys create`).  Roles: **public** (no key),
**analyst** (SQL, tables), **operator** (analyst plus ingest status, devices, compaction).  Every error is
`{"error": {"status": ..., "code": "...", "message": "..."}}`.
"""


def create_app(settings: Settings) -> FastAPI:
    lake = Lake(settings.lake)
    metrics = ApiMetrics(Path(lake.root))
    sandbox = analyst_sandbox(lake, SandboxLimits.from_settings(settings))  # as `corridorhub sql`
    hub = Services(
        settings=settings,
        lake=lake,
        keys=KeyStore(settings.keys_path),
        runner=QueryRunner(sandbox, settings.sql_concurrency, metrics),
        metrics=metrics,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await hub.runner.start()
        try:
            yield
        finally:
            hub.runner.shutdown()
            sandbox.close()

    app = FastAPI(
        title="corridorhub",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        responses=errors.documented(404, 405, 422),
    )
    app.state.services = hub
    errors.install(app)
    for module in (health, sql, tables, ingest, datasets, catalog):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(BodyTimeout, timeout_s=settings.http_body_timeout_s)
    app.add_middleware(errors.RequestIds)  # outermost: every answer, even a 413 or a 408, carries the id
    for name in ("corridorhub.api", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, errors.RequestIdLogFilter) for f in logger.filters):
            logger.addFilter(errors.RequestIdLogFilter())
    return app


class BodyTimeout:
    """Pure ASGI middleware: a request body not all received ``timeout_s`` after the request's headers fails
    with 408 (uvicorn has no body-read timeout).  One deadline for the whole body, not a gap between parts:
    a client sending a byte now and then cannot hold a connection for ever.  Once the body is complete,
    ``receive`` is passed through untimed: a streaming response waits on it for the client's disconnect."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        complete = False
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        async def timed() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408, f"The request body was not all received within {self.timeout_s:g} s"
                ) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed, send)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("corridorhub")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout that is not installed
        return "0"
