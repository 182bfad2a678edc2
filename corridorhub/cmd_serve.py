"""``corridorhub serve``: the HTTP API (FastAPI under uvicorn) over the lake."""

from __future__ import annotations

import logging

import click

from corridorhub._options import lake_option, settings_from
from store.lake import NO_LAKE_HINT, Lake

log = logging.getLogger("corridorhub.serve")


@click.command("serve")
@lake_option
@click.option("--host", default=None, help="Address to listen on [default: 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [default: 8080].")
@click.option(
    "--keys-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="API keys file [default: {lake}/_hub/keys.json].",
)
@click.option(
    "--releases",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of published releases served at / and /v1/datasets [default: ./data/releases].",
)
@click.pass_context
def command(
    ctx: click.Context,
    lake: str | None,
    host: str | None,
    port: int | None,
    keys_file: str | None,
    releases: str | None,
) -> None:
    """Serve the HTTP API: SQL for analysts, ingest status and compaction for operators, and the
    published open datasets for everyone (catalog page at /, files under /v1/datasets).

    Keys come from "corridorhub keys create".  OpenAPI at /openapi.json, docs at /docs, health at
    /healthz, Prometheus metrics at /metrics.  SQL limits: the sql_* settings.

    It may start before the lake exists (ingest creates it): it says so, and /healthz answers 503 until the
    lake appears; no restart is needed then.
    """
    import uvicorn  # here, not at the top: every other subcommand would pay for importing the web stack

    from api import create_app

    settings = settings_from(ctx, lake=lake, host=host, port=port, keys_file=keys_file, releases=releases)
    target = Lake(settings.lake)
    if not target.exists():  # a legitimate start order (serve before ingest), but maybe a mistyped --lake
        log.warning(
            "No lake at %s yet: /healthz, SQL, tables, ingest status and compaction answer 503 "
            "(lake_unavailable) until it exists, and work from then on without a restart; published "
            "datasets in %s are served meanwhile. %s.",
            target.root,
            settings.releases,
            NO_LAKE_HINT[0].upper() + NO_LAKE_HINT[1:],
        )
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower())
