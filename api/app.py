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

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

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


def sandbox_limits(settings: Settings) -> SandboxLimits:
    return SandboxLimits(
        memory_limit=settings.sql_memory_limit,
        threads=settings.sql_threads,
        timeout_s=settings.sql_timeout_s,
        max_rows=settings.sql_max_rows,
        max_temp_size=settings.sql_max_temp_size,
    )


def create_app(settings: Settings) -> FastAPI:
    lake = Lake(settings.lake)
    metrics = ApiMetrics(Path(lake.root))
    sandbox = analyst_sandbox(lake, sandbox_limits(settings))
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
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("corridorhub")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout that is not installed
        return "0"
