"""schemathesis against the app's own OpenAPI document: no request, for any role, gets a 5xx.

The app runs under uvicorn over a real lake; every operation is fuzzed with up to ``MAX_EXAMPLES``
generated requests (valid and invalid bodies, parameters and headers) with each role's key.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from api_harness import Hub, serve, with_settings
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from api import create_app

MAX_EXAMPLES = 50


@pytest.fixture
def base_url(hub: Hub) -> Iterator[str]:
    # A short time limit: generated SQL never runs long, and a bomb would only waste the budget.
    with serve(create_app(with_settings(hub, sql_timeout_s=2.0).settings)) as url:
        yield url


@pytest.mark.parametrize("who", ["none", "analyst", "operator"])
def test_no_server_errors_for_any_role(hub: Hub, base_url: str, who: str) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    headers = hub.headers(who)
    failures: list[str] = []
    statuses: dict[tuple[str, str], set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/sql", "/v1/tables", "/healthz", "/v1/compact"}
    for operation in operations:

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(base_url=base_url, headers=headers, timeout=30)
            statuses.setdefault((case.method, case.operation.path), set()).add(response.status_code)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}"
                )
            case.validate_response(response, checks=[not_a_server_error])

        fuzz()
    assert failures == []
    # The fuzzing reached past authentication and validation on the routes this role may use.
    reached = {key for key, codes in statuses.items() if codes & {200, 400, 404, 409}}
    if who == "operator":
        assert ("POST", "/v1/sql") in reached and ("GET", "/v1/ingest/status") in reached, statuses
