"""The one JSON error shape of the API, and the handlers that give every error that shape.

    {"error": {"status": 404, "code": "table_not_found", "message": "No table 'x': ...",
               "request_id": "3f2a9c0e5b1d4e77"}}

``status`` repeats the HTTP status, ``code`` is a stable machine-readable word, ``message`` says what went
wrong in a sentence a user can act on, ``request_id`` is the request's id (also its ``X-Request-ID``
response header and in every log line about it: :class:`RequestIds`).  Unexpected exceptions become 500
``internal_error`` with the traceback in the log and never in the response.  ``tests/api/test_errors.py``
locks the shape.
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from store.errors import CorridorHubError, LakeError, QueryError, QueryRefused, QueryTimeout, TableNotFound

log = logging.getLogger("corridorhub.api")

#: The ``code`` of an error raised as a bare HTTP status (by Starlette, FastAPI or us).
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    status: int
    code: str
    message: str
    request_id: str


#: The id of the request being answered ("-" outside one).
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
REQUEST_ID_HEADER = "X-Request-ID"
#: A client's own X-Request-ID is kept when it looks like an id (else a new one is made).
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIds:
    """Pure ASGI middleware: each request gets an id (the client's ``X-Request-ID`` when it is a plain
    token, else 16 random hex digits), sent back as ``X-Request-ID``, put in error bodies and in log lines
    (:class:`RequestIdLogFilter`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _CLIENT_ID.match(given) else secrets.token_hex(8)
        request_id.set(rid)  # not reset: Starlette's 500 handler, outside this middleware, reads it too

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_id)


class RequestIdLogFilter(logging.Filter):
    """Adds ``request_id`` to every record, and the id to the message of records logged inside a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.get()
        record.request_id = rid
        if rid != "-" and not getattr(record, "_with_request_id", False):
            record.msg = f"[{rid}] {record.msg}"
            record._with_request_id = True
        return True


class ErrorBody(BaseModel):
    """Every error the API answers with."""

    error: ErrorDetail


class ApiError(Exception):
    """An error with its HTTP status, code and message; raised by routes, answered in the one shape."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "code": code, "message": message, "request_id": request_id.get()}}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = error_body(status, code, message)
    headers = {**(headers or {}), REQUEST_ID_HEADER: body["error"]["request_id"]}
    return JSONResponse(body, status_code=status, headers=headers)


def from_library(exc: CorridorHubError) -> ApiError:
    """The API error for one of the library's errors (``store.errors``)."""
    if isinstance(exc, QueryTimeout):
        return ApiError(422, "sql_timeout", str(exc))
    if isinstance(exc, QueryRefused):
        return ApiError(400, "sql_refused", str(exc))
    if isinstance(exc, QueryError):
        return ApiError(400, "sql_error", str(exc))
    if isinstance(exc, TableNotFound):
        return ApiError(404, "table_not_found", str(exc))
    if isinstance(exc, LakeError):
        return ApiError(503, "lake_unavailable", str(exc))
    return ApiError(500, "internal_error", "internal error")


#: For the ``responses=`` of routes, so that OpenAPI documents the error shape.
def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorBody, "description": _STATUS_CODES.get(status, "error")} for status in statuses
    }


def install(app: FastAPI) -> None:
    """Register the handlers that answer every error in the one shape."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    async def on_library_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, CorridorHubError)
        error = from_library(exc)
        if error.status >= 500:
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(error.status, error.code, error.message)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        message = str(exc.detail) if exc.detail else ""
        if status == 404 and message in ("", "Not Found"):
            message = f"Nothing at {request.url.path}: the routes are listed at /docs"
        elif status == 405 and message in ("", "Method Not Allowed"):
            message = f"{request.method} is not allowed on {request.url.path}"
        elif (
            status == 400 and message == "There was an error parsing the body"
        ):  # FastAPI's, e.g. RecursionError
            message = "The request body could not be parsed (JSON nested too deeply?): send flatter JSON"
        return error_response(status, _STATUS_CODES.get(status, "error"), message, exc.headers)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "invalid_request", describe_validation(exc.errors()))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal error")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(CorridorHubError, on_library_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)


def describe_validation(errors: Any) -> str:
    """``body.sql: Field required; query.limit: ...`` from pydantic's error list (inputs not echoed)."""
    parts = []
    for error in list(errors)[:5]:
        location = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{location}: {error.get('msg', 'invalid')}" if location else str(error.get("msg")))
    return "Invalid request: " + "; ".join(parts) if parts else "Invalid request"
