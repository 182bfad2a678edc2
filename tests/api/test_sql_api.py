"""``POST /v1/sql`` over HTTP: exact results in every format, parameters, truncation, refusals, limits."""

from __future__ import annotations

import csv
import io
import threading
import time
from datetime import timedelta
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from api_harness import DEVICES, ROWS_PER_DEVICE, START, Hub, serve, with_settings
from fastapi.testclient import TestClient

from api import create_app

SMALL = "SELECT device_id, seq, speed_mps, ts FROM state WHERE seq < 3 ORDER BY device_id, seq"
EXPECTED = [(d, s, s / 10, START + timedelta(seconds=s)) for d in sorted(DEVICES) for s in range(3)]
RECURSIVE_BOMB = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"
CROSS_JOIN_BOMB = "SELECT count(*) FROM range(100000000) a, range(100000000) b WHERE a.range + b.range = -1"


def _sql(client: TestClient, hub: Hub, sql: str, **body: Any) -> httpx.Response:
    return client.post("/v1/sql", json={"sql": sql, **body}, headers=hub.headers("analyst"))


def test_json_result_is_exact(hub: Hub, client: TestClient) -> None:
    response = _sql(client, hub, SMALL)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert [c["name"] for c in body["columns"]] == ["device_id", "seq", "speed_mps", "ts"]
    assert body["columns"][1]["type"] == "int64"
    assert body["truncated"] is False and body["row_count"] == 6
    want = [[d, s, v, t.isoformat()] for d, s, v, t in EXPECTED]
    assert body["rows"] == want


def test_csv_result_is_exact(hub: Hub, client: TestClient) -> None:
    response = _sql(client, hub, SMALL, format="csv")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["X-Corridorhub-Truncated"] == "false"
    assert response.headers["X-Corridorhub-Row-Count"] == "6"
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["device_id", "seq", "speed_mps", "ts"]
    parsed = [(d, int(s), float(v), t) for d, s, v, t in rows[1:]]
    assert [(d, s, v) for d, s, v, _ in parsed] == [(d, s, v) for d, s, v, _ in EXPECTED]
    assert [t for *_, t in parsed] == [t.strftime("%Y-%m-%d %H:%M:%S.%fZ") for *_, t in EXPECTED]


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_binary_results_read_back_exactly(hub: Hub, client: TestClient, fmt: str) -> None:
    response = _sql(client, hub, SMALL, format=fmt)
    assert response.status_code == 200
    media = {"parquet": "application/vnd.apache.parquet", "arrow": "application/vnd.apache.arrow.stream"}
    assert response.headers["content-type"] == media[fmt]
    assert response.headers["X-Corridorhub-Truncated"] == "false"
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(response.content))
        assert pq.read_metadata(io.BytesIO(response.content)).metadata[b"corridorhub.truncated"] == b"false"
    else:
        table = pa.ipc.open_stream(response.content).read_all()
    assert table.column_names == ["device_id", "seq", "speed_mps", "ts"]
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert [tuple(r.values()) for r in table.to_pylist()] == EXPECTED


def test_params_positional_and_named(hub: Hub, client: TestClient) -> None:
    sql = "SELECT count(*) AS n FROM state WHERE device_id = ? AND seq >= ?"
    assert _sql(client, hub, sql, params=["robot-07", 10]).json()["rows"] == [[ROWS_PER_DEVICE - 10]]
    sql = "SELECT count(*) AS n FROM state WHERE device_id = $device AND seq < $below"
    response = _sql(client, hub, sql, params={"device": "shuttle-01", "below": 5})
    assert response.json()["rows"] == [[5]]
    # A value is bound, never spliced: this is a device id that matches nothing.
    assert _sql(
        client, hub, "SELECT count(*) FROM state WHERE device_id = ?", params=["x' OR 1=1 --"]
    ).json()["rows"] == [[0]]


def test_bad_params_are_4xx(hub: Hub, client: TestClient) -> None:
    too_few = _sql(client, hub, "SELECT ? + ?", params=[1])
    assert too_few.status_code == 400 and too_few.json()["error"]["code"] == "sql_error"
    nested = _sql(client, hub, "SELECT ?", params=[[1, 2]])
    assert nested.status_code == 422
    an_object = _sql(client, hub, "SELECT ?", params=[{"a": 1}])
    assert an_object.status_code == 422
    bad_name = _sql(client, hub, "SELECT $x", params={"no spaces": 1})
    assert bad_name.status_code == 422


def test_truncation_is_flagged_in_every_format(hub: Hub) -> None:
    capped = with_settings(hub, sql_max_rows=25)
    sql = "SELECT seq FROM state ORDER BY device_id, seq"
    with TestClient(create_app(capped.settings)) as client:
        body = _sql(client, capped, sql).json()
        assert body["truncated"] is True and body["row_count"] == 25 and len(body["rows"]) == 25
        exact = _sql(client, capped, "SELECT seq FROM state LIMIT 25").json()
        assert exact["truncated"] is False and exact["row_count"] == 25
        for fmt in ("csv", "parquet", "arrow"):
            response = _sql(client, capped, sql, format=fmt)
            assert response.headers["X-Corridorhub-Truncated"] == "true", fmt
            assert response.headers["X-Corridorhub-Row-Count"] == "25", fmt
        parquet = io.BytesIO(_sql(client, capped, sql, format="parquet").content)
        assert pq.read_table(parquet).num_rows == 25
        assert pq.read_metadata(parquet).metadata[b"corridorhub.truncated"] == b"true"
        assert len(_sql(client, capped, sql, format="csv").text.splitlines()) == 26


def test_a_large_result_streams_in_several_chunks(hub: Hub) -> None:
    big = with_settings(hub, sql_max_rows=200_000)
    with TestClient(create_app(big.settings)) as client:
        with client.stream(
            "POST",
            "/v1/sql",
            json={"sql": "SELECT range AS i, 'x' || range AS s FROM range(150000)", "format": "json"},
            headers=big.headers("analyst"),
        ) as response:
            chunks = list(response.iter_raw())
        body = b"".join(chunks)
    assert len(chunks) > 3
    assert body.endswith(b'"truncated":false,"row_count":150000}')


def test_refused_sql_names_what_was_refused(hub: Hub, client: TestClient) -> None:
    attempts = {
        "COPY state TO 'out.csv'": "COPY",
        "ATTACH 'x.db' AS x": "ATTACH",
        "INSTALL httpfs": "INSTALL",
        "SET threads = 64": "SET",
        "SELECT * FROM read_csv('/etc/passwd')": "read_csv",
    }
    for sql, named in attempts.items():
        response = _sql(client, hub, sql)
        assert response.status_code == 400, sql
        error = response.json()["error"]
        assert error["code"] == "sql_refused", (sql, error)
        assert named.lower() in error["message"].lower(), (sql, error)


def test_an_unknown_table_is_a_clear_400(hub: Hub, client: TestClient) -> None:
    error = _sql(client, hub, "SELECT * FROM vehicles").json()["error"]
    assert error["code"] == "sql_error" and "vehicles" in error["message"]


def test_a_sql_error_keeps_duckdbs_hint_and_caret(hub: Hub, client: TestClient) -> None:
    response = _sql(client, hub, "SELECT speed FROM state")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "sql_error"
    lines = error["message"].splitlines()
    assert lines[0] == 'Binder Error: Referenced column "speed" not found in FROM clause!'
    assert lines[1].startswith('Candidate bindings: "speed_mps"')
    assert lines[2:] == ["LINE 1: SELECT speed FROM state", "               ^^^^^"]


def test_runaway_queries_are_stopped_while_the_service_answers_others(hub: Hub) -> None:
    """A recursive CTE and a cross-join bomb run into the time limit (422 sql_timeout); meanwhile /healthz
    and another analyst's small query are answered."""
    slow = with_settings(hub, sql_timeout_s=2.0, sql_concurrency=4)
    results: dict[str, tuple[int, dict[str, Any], float]] = {}

    def run_bomb(url: str, name: str, sql: str) -> None:
        started = time.monotonic()
        response = httpx.post(f"{url}/v1/sql", json={"sql": sql}, headers=slow.headers("analyst"), timeout=60)
        results[name] = (response.status_code, response.json(), time.monotonic() - started)

    with serve(create_app(slow.settings)) as url:
        bombs = [
            threading.Thread(target=run_bomb, args=(url, name, sql))
            for name, sql in (("recursive", RECURSIVE_BOMB), ("cross_join", CROSS_JOIN_BOMB))
        ]
        for thread in bombs:
            thread.start()
        _wait_for_open_queries(url, 2)
        health = httpx.get(f"{url}/healthz", timeout=10)
        small = httpx.post(f"{url}/v1/sql", json={"sql": SMALL}, headers=slow.headers("analyst"), timeout=10)
        still_running = [t.is_alive() for t in bombs]
        for thread in bombs:
            thread.join(timeout=60)
        metrics = httpx.get(f"{url}/metrics").text

    assert health.status_code == 200
    assert small.status_code == 200 and small.json()["row_count"] == 6
    assert all(still_running), "the small requests were answered only after the bombs had stopped"
    for name in ("recursive", "cross_join"):
        status, body, seconds = results[name]
        assert (status, body["error"]["code"]) == (422, "sql_timeout"), (name, body)
        assert "time limit" in body["error"]["message"]
        assert seconds < 2.0 + 8.0, (name, seconds)  # stopped near the limit, not left to run
    assert 'corridorhub_sql_queries_total{outcome="timeout"} 2.0' in metrics


def _wait_for_open_queries(url: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics").text
        line = next(ln for ln in text.splitlines() if ln.startswith("corridorhub_sql_queries_open "))
        if float(line.split()[1]) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{count} queries did not start")


def test_too_many_concurrent_queries_are_429(hub: Hub) -> None:
    """One slot, four waiting: the next query is told to retry instead of queueing without bound."""
    busy = with_settings(hub, sql_timeout_s=2.0, sql_concurrency=1)
    statuses: list[int] = []

    def post(url: str, sql: str) -> None:
        response = httpx.post(f"{url}/v1/sql", json={"sql": sql}, headers=busy.headers("analyst"), timeout=60)
        statuses.append(response.status_code)

    with serve(create_app(busy.settings)) as url:
        threads = [threading.Thread(target=post, args=(url, RECURSIVE_BOMB))]
        threads[0].start()
        _wait_for_open_queries(url, 1)
        for _ in range(4):
            threads.append(threading.Thread(target=post, args=(url, SMALL)))
            threads[-1].start()
        _wait_for_gauge(url, "corridorhub_sql_queries_waiting", 4)
        rejected = httpx.post(
            f"{url}/v1/sql", json={"sql": SMALL}, headers=busy.headers("analyst"), timeout=10
        )
        for thread in threads:
            thread.join(timeout=60)
    assert rejected.status_code == 429
    assert rejected.json()["error"]["code"] == "too_many_queries"
    assert rejected.headers["Retry-After"] == "1"
    assert sorted(statuses) == [200, 200, 200, 200, 422]  # the waiting ones ran once the slot came free


def _wait_for_gauge(url: str, name: str, value: float) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics").text
        line = next(ln for ln in text.splitlines() if ln.startswith(name + " "))
        if float(line.split()[1]) >= value:
            return
        time.sleep(0.02)
    raise AssertionError(f"{name} did not reach {value}")
