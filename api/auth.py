"""Who may call what: roles ``public`` < ``analyst`` < ``operator``, keys as ``Authorization: Bearer``.

A route declares the least role it needs with ``dependencies=[requires(Role.ANALYST)]``; a public route
declares nothing.  No or malformed ``Authorization`` header, or an unknown or revoked key: 401 with
``WWW-Authenticate: Bearer``.  A valid key whose role is too low: 403.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from api.services import services
from store.keys import KeyInfo

#: Declares the scheme in OpenAPI (the /docs "Authorize" button); the header is checked below.
_bearer = HTTPBearer(auto_error=False, description="An API key from `corridorhub keys create`.")


class Role(enum.IntEnum):
    PUBLIC = 0
    ANALYST = 1
    OPERATOR = 2


def _unauthorized(message: str, error: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": f'Bearer error="{error}"'})


def authenticate(request: Request) -> KeyInfo:
    """The key of this request, or 401."""
    header = request.headers.get("authorization")
    if header is None:
        raise ApiError(
            401,
            "unauthorized",
            "This route needs an API key: send 'Authorization: Bearer <key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    scheme, _, key = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("The Authorization header must read 'Bearer <key>'", "invalid_request")
    info = services(request).keys.authenticate(key.strip())
    if info is None:
        raise _unauthorized("Unknown or revoked API key", "invalid_token")
    return info


def requires(role: Role) -> Any:
    """A dependency admitting keys of ``role`` or above."""

    def dependency(
        request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> KeyInfo:
        info = authenticate(request)
        if Role[info.role.upper()] < role:
            raise ApiError(
                403,
                "forbidden",
                f"This route needs the {role.name.lower()} role; key {info.id!r} is {info.role}",
            )
        request.state.key = info
        return info

    dependency.required_role = role  # type: ignore[attr-defined]
    return Depends(dependency)


def required_role(endpoint_dependencies: list[Any]) -> Role:
    """The role a route's dependencies require (PUBLIC when none): for docs and the role-matrix test."""
    for dep in endpoint_dependencies:
        call: Callable[..., Any] | None = getattr(dep, "call", None) or getattr(dep, "dependency", None)
        role = getattr(call, "required_role", None)
        if isinstance(role, Role):
            return role
    return Role.PUBLIC
