"""``corridorhub serve``: the HTTP API (FastAPI under uvicorn) over the lake."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import click

from corridorhub._options import lake_option, settings_from
from store.lake import NO_LAKE_HINT, Lake
from store.settings import Settings

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
    /healthz, Prometheus metrics at /metrics.  SQL limits: the sql_* settings.  Connections: the http_*
    settings (header and body read timeouts, keep-alive, a cap on connections; docs/API.md).

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
    from api.errors import RequestIdLogFilter

    for handler in logging.getLogger().handlers:  # every module's lines during a request name its id
        handler.addFilter(RequestIdLogFilter())
    uvicorn.Server(server_config(create_app(settings), settings)).run()


def server_config(app: Any, settings: Settings) -> Any:
    """uvicorn's configuration of the service: keep-alive, a cap on connections (``limit_concurrency``:
    beyond it uvicorn answers 503) and a header-read timeout, which uvicorn lacks (its ``timeout_keep_alive``
    starts only after a first response: a client that connects and sends its headers slowly holds the
    connection for ever), added by :func:`protocol_with_header_timeout`."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_keep_alive=max(1, round(settings.http_keep_alive_s)),
        limit_concurrency=settings.http_max_connections,
        http=protocol_with_header_timeout(settings.http_header_timeout_s),
        log_config=_log_config_with_request_ids(),
    )


def _log_config_with_request_ids() -> dict[str, Any]:
    """uvicorn's own logging configuration, with each access line naming its request's id."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"request_id": {"()": "api.errors.RequestIdLogFilter"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["request_id"]
    access = config["formatters"]["access"]
    access["fmt"] = access["fmt"].replace("%(levelprefix)s ", "%(levelprefix)s [%(request_id)s] ", 1)
    return config


def protocol_with_header_timeout(timeout_s: float) -> type[Any]:
    """uvicorn's h11 protocol, closing a connection whose request line and headers have not all arrived
    ``timeout_s`` after it opened or after its previous response (a body is the app's to time: api.app)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if (
                self.cycle is not None
                and self._header_timer is not None
                and self.cycle is not self._armed_for
            ):
                self._header_timer.cancel()  # a request started: its headers are in
                self._header_timer = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._armed_for = self.cycle
            self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.cycle is self._armed_for and not self.transport.is_closing():
                log.info("closing a connection that sent no complete request headers in %g s", timeout_s)
                self.transport.close()

    return HeaderTimeoutH11
