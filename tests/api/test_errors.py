"""Every error the API gives has one shape, ``{"error": {"status", "code", "message", "request_id"}}`` (the
id also in the ``X-Request-ID`` header), and never a trace.

Like datasette's ``tests/test_error_shape.py``: one request per status, the same assertions for each.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
from api_harness import Hub
from fastapi.testclient import TestClient

from api import create_app
from store.settings import Settings


def assert_error_shape(response: httpx.Response, status: int, code: str | None = None) -> dict[str, object]:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"status", "code", "message", "request_id"}
    assert error["status"] == status
    assert error["request_id"] == response.headers["X-Request-ID"] and len(error["request_id"]) >= 8
    assert isinstance(error["code"], str) and error["code"].replace("_", "").isalpha()
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    assert "Traceback" not in response.text and 'File "' not in response.text
    if code is not None:
        assert error["code"] == code, error
    return error


#: A body JSON's parser gives up on (3,000 levels of nesting): the documented 400 bad_request, not a 500.
DEEP_JSON = b'{"sql": "SELECT 1", "params": ' + b"[" * 3000 + b"]" * 3000 + b"}"


def test_each_client_error_has_the_one_shape(hub: Hub, client: TestClient) -> None:
    analyst, operator = hub.headers("analyst"), hub.headers("operator")
    cases = [
        (client.post("/v1/sql", json={"sql": "SELEC 1"}, headers=analyst), 400, "sql_error"),
        (client.post("/v1/sql", json={"sql": "DROP TABLE state"}, headers=analyst), 400, "sql_refused"),
        (client.post("/v1/sql", json={"sql": "SELECT 1"}), 401, "unauthorized"),
        (client.get("/v1/devices", headers=analyst), 403, "forbidden"),
        (client.get("/v1/nothing-here", headers=operator), 404, "not_found"),
        (client.get("/v1/tables/nope/sample", headers=analyst), 404, "table_not_found"),
        (client.delete("/v1/sql", headers=analyst), 405, "method_not_allowed"),
        (client.post("/v1/sql", json={"sql": "x" * 2_000_000}, headers=analyst), 413, "body_too_large"),
        (client.post("/v1/sql", json={"sql": "SELECT 1", "format": "xml"}, headers=analyst), 422, None),
        (client.post("/v1/sql", content=b"{not json", headers=analyst), 422, "invalid_request"),
        (
            client.post(
                "/v1/sql", content=DEEP_JSON, headers={**analyst, "Content-Type": "application/json"}
            ),
            400,
            "bad_request",
        ),
        (client.get("/v1/tables/state/sample?limit=0", headers=analyst), 422, "invalid_request"),
    ]
    for response, status, code in cases:
        assert_error_shape(response, status, code)
    deep = next(response for response, _, code in cases if code == "bad_request")
    assert "nested too deeply" in deep.json()["error"]["message"]


def test_validation_messages_name_the_field(hub: Hub, client: TestClient) -> None:
    response = client.post(
        "/v1/sql", json={"sql": "SELECT 1", "format": "xml"}, headers=hub.headers("analyst")
    )
    message = assert_error_shape(response, 422, "invalid_request")["message"]
    assert "body.format" in str(message)
    response = client.post("/v1/sql", json={"query": "SELECT 1"}, headers=hub.headers("analyst"))
    assert "body.sql" in str(assert_error_shape(response, 422)["message"])


def test_a_chunked_body_over_the_limit_is_413(hub: Hub, client: TestClient) -> None:
    """No Content-Length to check first: the body is counted as it arrives."""

    def chunks() -> Iterator[bytes]:
        yield b'{"sql": "'
        for _ in range(64):  # 64 x 64 KiB = 4 MiB offered against a 1 MiB limit
            yield b"x" * 65_536
        yield b'"}'

    response = client.post(
        "/v1/sql", content=chunks(), headers={**hub.headers("analyst"), "Content-Type": "application/json"}
    )
    assert_error_shape(response, 413, "body_too_large")


def test_a_wrong_role_is_403_and_says_which_role_is_needed(hub: Hub, client: TestClient) -> None:
    error = assert_error_shape(client.post("/v1/compact", headers=hub.headers("analyst")), 403, "forbidden")
    assert "operator" in str(error["message"])


def test_an_unexpected_exception_is_500_internal_error_without_a_trace(hub: Hub) -> None:
    app = create_app(hub.settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail /etc/passwd")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    error = assert_error_shape(response, 500, "internal_error")
    assert error["message"] == "internal error"
    assert "secret detail" not in response.text


def test_a_missing_lake_is_503_on_healthz(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(lake=tmp_path / "absent"))) as client:
        assert_error_shape(client.get("/healthz"), 503, "lake_unavailable")
