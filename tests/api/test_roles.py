"""The role matrix: every route of the app x {no key, garbage header, revoked key, analyst, operator}.

The routes are read from ``app.routes``: a route added without an entry in ``ROLES`` fails the test.
"""

from __future__ import annotations

from typing import Any

import pytest
from api_harness import SMALL_DATASET, SMALL_VERSION, Hub
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

from api import create_app
from store.settings import Settings

#: (method, path) -> the least role.
ROLES: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "public",
    ("GET", "/metrics"): "public",
    ("GET", "/openapi.json"): "public",
    ("GET", "/docs"): "public",
    ("GET", "/docs/oauth2-redirect"): "public",
    ("GET", "/redoc"): "public",
    ("POST", "/v1/sql"): "analyst",
    ("GET", "/v1/tables"): "analyst",
    ("GET", "/v1/tables/{name}/sample"): "analyst",
    ("GET", "/v1/ingest/status"): "operator",
    ("GET", "/v1/devices"): "operator",
    ("POST", "/v1/compact"): "operator",
    ("GET", "/"): "public",
    ("GET", "/v1/datasets"): "public",
    ("GET", "/v1/datasets/{dataset}"): "public",
    ("GET", "/v1/datasets/{dataset}/releases"): "public",
    ("GET", "/v1/datasets/{dataset}/releases/{version}"): "public",
    ("GET", "/v1/datasets/{dataset}/releases/{version}/{file}"): "public",
}

#: What a valid request to each route looks like.
REQUESTS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/sql"): {"json": {"sql": "SELECT 42 AS answer"}},
}
_RELEASE = f"/v1/datasets/{SMALL_DATASET}/releases/{SMALL_VERSION}"
PATHS = {
    "/v1/tables/{name}/sample": "/v1/tables/state/sample",
    "/v1/datasets/{dataset}": f"/v1/datasets/{SMALL_DATASET}",
    "/v1/datasets/{dataset}/releases": f"/v1/datasets/{SMALL_DATASET}/releases",
    "/v1/datasets/{dataset}/releases/{version}": _RELEASE,
    "/v1/datasets/{dataset}/releases/{version}/{file}": f"{_RELEASE}/{SMALL_DATASET}.csv",
}

WHO = ("none", "garbage", "revoked", "analyst", "operator")
RANK = {"public": 0, "analyst": 1, "operator": 2}


def _walk(routes: list[Any], prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of every route, descending into included routers (newer FastAPI keeps them lazy)."""
    found = set()
    for route in routes:
        router = getattr(route, "original_router", None)
        if router is not None:
            found |= _walk(router.routes, prefix + getattr(route.include_context, "prefix", ""))
            continue
        assert isinstance(route, Route | APIRoute), route
        found |= {(m, prefix + route.path) for m in route.methods or () if m != "HEAD"}
    return found


def _app_routes() -> set[tuple[str, str]]:
    return _walk(create_app(Settings()).routes)


def test_every_route_has_a_role_in_the_matrix() -> None:
    routes = _app_routes()
    assert routes - set(ROLES) == set(), "new route(s) without an entry in ROLES"
    assert set(ROLES) - routes == set(), "ROLES names route(s) the app does not have"


def expected_status(role: str, who: str) -> int:
    if role == "public":
        return 200  # a public route ignores whatever Authorization it is sent
    if who in ("none", "garbage", "revoked"):
        return 401
    return 200 if RANK[who] >= RANK[role] else 403


@pytest.mark.parametrize("method,path", sorted(ROLES), ids=[f"{m} {p}" for m, p in sorted(ROLES)])
def test_role_matrix(hub: Hub, client: TestClient, method: str, path: str) -> None:
    role = ROLES[(method, path)]
    for who in WHO:
        response = client.request(
            method, PATHS.get(path, path), headers=hub.headers(who), **REQUESTS.get((method, path), {})
        )
        want = expected_status(role, who)
        assert response.status_code == want, f"{who}: {response.status_code} {response.text[:300]}"
        if want == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert response.json()["error"]["code"] == "unauthorized"
        if want == 403:
            assert response.json()["error"]["code"] == "forbidden"
            assert role in response.json()["error"]["message"]


def test_the_openapi_document_declares_bearer_keys_on_protected_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for (method, path), role in ROLES.items():
        operation = spec["paths"].get(path, {}).get(method.lower())
        if operation is None:
            continue  # /docs, /redoc, /openapi.json are not in the document
        assert bool(operation.get("security")) == (role != "public"), (method, path)
