"""``corridorhub serve``: the HTTP API (FastAPI under uvicorn) over the lake."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
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
    connection for ever), added by :func:`protocol_with_header_timeout`, which also answers uvicorn's own
    refusals (a malformed request, the connection cap) in the API's one JSON error shape."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_keep_alive=max(1, round(settings.http_keep_alive_s)),
        limit_concurrency=settings.http_max_connections,
        http=protocol_with_header_timeout(settings.http_header_timeout_s, settings.max_request_bytes),
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


#: h11's reasons for refusing a request (``RemoteProtocolError``), as a user reads them.
_PROTOCOL_ERRORS = {
    "illegal request line": "The request line is not valid HTTP/1.1 (method, then a path of printable ASCII "
    "characters, percent-encoded beyond, then the version)",
    "bad Content-Length": "Content-Length must be a non-negative whole number of bytes",
    "illegal chunk header": "A chunk size of the chunked request body is not a hexadecimal number",
}
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*([0-9]+)[ \t]*\r\n", re.IGNORECASE)
_CLIENT_ID = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")


def _error_json(status: int, code: str, message: str, rid: str) -> bytes:
    """The API's one error shape (``api.errors``), for answers uvicorn gives before the app is called."""
    error = {"status": status, "code": code, "message": message, "request_id": rid}
    return json.dumps({"error": error}, separators=(",", ":")).encode()


def protocol_with_header_timeout(timeout_s: float, max_request_bytes: int) -> type[Any]:
    """uvicorn's h11 protocol, closing a connection whose request line and headers have not all arrived
    ``timeout_s`` after it opened or after its previous response (a body is the app's to time: api.app).

    It also answers what uvicorn answers itself in plain text in the API's JSON error shape, with a request
    id: a request h11 cannot parse (400 ``bad_request``; an over-long Content-Length 413
    ``body_too_large``) and a request beyond the connection cap (503 ``too_many_connections``)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _recent = b""  # the last bytes received, to tell an over-long Content-Length from a malformed one

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._cap, self.limit_concurrency = self.limit_concurrency, None  # checked here, answered JSON
            self._app = self.app
            self._last_error = ""
            next_event = self.conn.next_event

            def remembered() -> Any:
                try:
                    return next_event()
                except h11.RemoteProtocolError as exc:
                    self._last_error = str(exc)
                    raise

            self.conn.next_event = remembered  # type: ignore[method-assign]

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()

        def data_received(self, data: bytes) -> None:
            self._recent = (self._recent + data)[-16384:]
            super().data_received(data)

        def handle_events(self) -> None:
            cap = self._cap
            full = cap is not None and (len(self.connections) >= cap or len(self.tasks) >= cap)  # as uvicorn
            self.app = self._too_many_connections if full else self._app
            super().handle_events()
            if (
                self.cycle is not None
                and self._header_timer is not None
                and self.cycle is not self._armed_for
            ):
                self._header_timer.cancel()  # a request started: its headers are in
                self._header_timer = None

        async def _too_many_connections(self, scope: Any, receive: Any, send: Any) -> None:
            given = dict(scope.get("headers") or []).get(b"x-request-id", b"")
            rid = given.decode() if _CLIENT_ID.match(given) else secrets.token_hex(8)
            message = f"The service is serving its maximum of {self._cap} connections: retry shortly"
            self.logger.warning("[%s] %s", rid, message)
            body = _error_json(503, "too_many_connections", message, rid)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
                (b"x-request-id", rid.encode()),
                (b"connection", b"close"),
            ]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        def send_400_response(self, msg: str) -> None:
            reason = self._last_error.split(":", 1)[0]
            rid = secrets.token_hex(8)
            declared = _CONTENT_LENGTH.search(self._recent)
            if reason == "bad Content-Length" and declared and int(declared[1]) > max_request_bytes:
                status, code, text = 413, "body_too_large", f"The body is over {max_request_bytes} bytes"
            else:
                text = _PROTOCOL_ERRORS.get(reason, f"The request is not valid HTTP/1.1 ({reason})")
                status, code = 400, "bad_request"
            self.logger.warning("[%s] %s: %s", rid, msg, reason)
            if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):  # an answer already started
                self.transport.close()
                return
            body = _error_json(status, code, text, rid)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", rid.encode()),
                (b"connection", b"close"),
            ]
            self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers)))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
            self.transport.close()

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
