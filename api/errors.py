"""The one JSON error shape of the API, and the handlers that give every error that shape.

    {"error": {"status": 404, "code": "table_not_found", "message": "No table 'x': ..."}}

``status`` repeats the HTTP status, ``code`` is a stable machine-readable word, ``message`` says what went
wrong in a sentence a user can act on.  Unexpected exceptions become 500 ``internal_error`` with the
traceback in the log and never in the response.  ``tests/api/test_errors.py`` locks the shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

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
    return {"error": {"status": status, "code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, code, message), status_code=status, headers=dict(headers or {}))


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
