"""Operator routes and what everyone may read: ingest status from the workers' status files, devices,
compaction, tables with their docs, /healthz and /metrics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from api_harness import DEVICES, ROWS_PER_DEVICE, Hub, state_table
from fastapi.testclient import TestClient

from api import create_app
from store.ingest_status import write_status
from store.lake import Lake
from store.schema import SCHEMAS
from store.views import VIEWS_BY_NAME


def status(
    client_id: str,
    *,
    written_at: float,
    messages: int,
    devices: list[dict[str, Any]],
    started_at: float | None = None,
) -> dict[str, Any]:
    """A status file as ``ingest.status.IngestCounters.snapshot`` writes it (started 100 s before)."""
    return {
        "client_id": client_id,
        "pid": 4242,
        "written_at": written_at,
        "started_at": written_at - 100.0 if started_at is None else started_at,
        "connected": True,
        "subscribed": True,
        "connects": 1,
        "protocol": "5",
        "messages_received": messages,
        "messages_acked": messages - 5,
        "bytes_received": messages * 200,
        "rows": {"state": messages * 2},
        "quarantined": {"invalid_json": 3},
        "duplicates_dropped": 1,
        "commits": 40,
        "commit_failures": 0,
        "last_commit_at": written_at - 0.5,
        "last_commit_s": 0.012,
        "commit_latency": {
            "buckets_s": [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            "counts": [10, 20, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "sum_s": 0.5,
        },
        "buffer_messages": 5,
        "buffer_bytes": 1000,
        "devices": devices,
        "seq_missing_total": sum(d["seq_missing"] for d in devices),
    }


def device(device_id: str, *, last_seen: float, samples: int, missing: int) -> dict[str, Any]:
    return {
        "operator": "hic",
        "device_id": device_id,
        "stream": "state",
        "last_seen_at": last_seen,
        "samples": samples,
        "seq_low": 0,
        "seq_high": samples + missing - 1,
        "seq_missing": missing,
    }


def test_ingest_status_merges_workers_and_computes_rates(hub: Hub, client: TestClient) -> None:
    root = Path(hub.settings.lake)
    now = time.time()
    write_status(root, status("w1", written_at=now - 10, messages=1000, devices=[
        device("shuttle-01", last_seen=now - 11, samples=600, missing=2)]))  # fmt: skip
    write_status(root, status("w2", written_at=now - 10, messages=500, devices=[
        device("shuttle-01", last_seen=now - 10.5, samples=400, missing=1),
        device("robot-07", last_seen=now - 12, samples=300, missing=0)]))  # fmt: skip
    operator = hub.headers("operator")

    first = client.get("/v1/ingest/status", headers=operator).json()
    w1 = next(w for w in first["workers"] if w["client_id"] == "w1")
    assert w1["rate_basis"] == "since_start" and w1["messages_per_s"] == 10.0  # 1000 messages in 100 s
    assert (w1["buffer_messages"], w1["connected"], w1["stale"]) == (5, True, False)
    assert w1["last_commit_at"].endswith("Z") and w1["seq_missing_total"] == 2
    shuttle = next(d for d in first["devices"] if d["device_id"] == "shuttle-01")
    assert (shuttle["samples"], shuttle["seq_missing"], shuttle["workers"]) == (1000, 3, ["w1", "w2"])

    write_status(root, status("w1", written_at=now, messages=1500, devices=[], started_at=now - 110))
    second = client.get("/v1/ingest/status", headers=operator).json()
    w1 = next(w for w in second["workers"] if w["client_id"] == "w1")
    assert w1["rate_basis"] == "recent" and w1["messages_per_s"] == 50.0  # 500 more in 10 s
    assert w1["rows_per_s"] == 100.0

    devices = client.get("/v1/devices", headers=operator).json()["devices"]
    assert [(d["device_id"], d["samples"]) for d in devices] == [("robot-07", 300), ("shuttle-01", 400)]
    assert set(devices[1]["streams"]) == {"state"}


def test_no_workers_is_an_empty_status_not_an_error(hub: Hub, client: TestClient) -> None:
    body = client.get("/v1/ingest/status", headers=hub.headers("operator")).json()
    assert (body["workers"], body["devices"]) == ([], [])


def test_a_stale_worker_is_flagged(hub: Hub, client: TestClient) -> None:
    write_status(
        Path(hub.settings.lake), status("old", written_at=time.time() - 3600, messages=1, devices=[])
    )
    worker = client.get("/v1/ingest/status", headers=hub.headers("operator")).json()["workers"][0]
    assert worker["stale"] is True and worker["status_age_s"] > 3000


def test_metrics_expose_ingest_counters_and_query_outcomes(hub: Hub, client: TestClient) -> None:
    write_status(Path(hub.settings.lake), status("w1", written_at=time.time(), messages=1000, devices=[]))
    client.post("/v1/sql", json={"sql": "SELECT 1"}, headers=hub.headers("analyst"))
    client.post("/v1/sql", json={"sql": "DELETE FROM state"}, headers=hub.headers("analyst"))
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    for line in (
        'corridorhub_ingest_messages_received_total{worker="w1"} 1000.0',
        'corridorhub_ingest_rows_total{stream="state",worker="w1"} 2000.0',
        'corridorhub_ingest_quarantined_total{reason="invalid_json",worker="w1"} 3.0',
        'corridorhub_ingest_commit_seconds_bucket{le="0.01",worker="w1"} 30.0',
        'corridorhub_ingest_commit_seconds_bucket{le="+Inf",worker="w1"} 40.0',
        'corridorhub_ingest_connected{worker="w1"} 1.0',
        'corridorhub_sql_queries_total{outcome="ok"} 1.0',
        'corridorhub_sql_queries_total{outcome="refused"} 1.0',
    ):
        assert line in text, line
    assert 'corridorhub_sql_query_seconds_count{outcome="ok"} 1.0' in text


def test_compaction_removes_duplicates_and_refuses_a_second_run(hub: Hub, client: TestClient) -> None:
    lake = Lake(hub.settings.lake)
    lake.append("state", state_table(DEVICES[0], 10))  # a redelivered copy of the first 10 samples
    operator = hub.headers("operator")
    report = client.post("/v1/compact", headers=operator).json()
    assert report["duplicates_removed"] == 10
    assert next(t for t in report["tables"] if t["table"] == "state")["partitions_deduplicated"] == 1
    count = client.post("/v1/sql", json={"sql": "SELECT count(*) FROM state"}, headers=operator).json()
    assert count["rows"] == [[len(DEVICES) * ROWS_PER_DEVICE]]

    services = client.app.state.services  # type: ignore[attr-defined]
    with services.compaction:  # as if a compaction were running
        busy = client.post("/v1/compact", headers=operator)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "compaction_running"


def test_tables_lists_tables_and_views_with_units(hub: Hub, client: TestClient) -> None:
    tables = {t["name"]: t for t in client.get("/v1/tables", headers=hub.headers("analyst")).json()["tables"]}
    assert {"state", "event", "network", "quarantine"} <= set(tables)
    assert set(VIEWS_BY_NAME) <= set(tables)
    speed = next(c for c in tables["state"]["columns"] if c["name"] == "speed_mps")
    assert speed == {
        "name": "speed_mps",
        "type": "DOUBLE",
        "unit": SCHEMAS["state"]["speed_mps"].unit,
        "description": SCHEMAS["state"]["speed_mps"].description,
    }
    assert tables["trips"]["kind"] == "view" and tables["trips"]["columns"]


def test_sample_returns_a_bounded_number_of_rows(hub: Hub, client: TestClient) -> None:
    analyst = hub.headers("analyst")
    body = client.get("/v1/tables/state/sample?limit=3", headers=analyst).json()
    assert body["table"] == "state" and body["row_count"] == 3 and len(body["rows"]) == 3
    assert [c["name"] for c in body["columns"]] == SCHEMAS["state"].arrow.names
    assert client.get("/v1/tables/state/sample?limit=100000", headers=analyst).status_code == 422
    assert client.get("/v1/tables/..%2Fetc/sample", headers=analyst).status_code == 404


def test_healthz_lists_table_versions(hub: Hub, client: TestClient) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["tables"]["state"] == 2  # created, then two appends


def test_the_service_reads_commits_made_while_it_runs(hub: Hub, client: TestClient) -> None:
    """Ingest shares only the lake: a commit made after start-up is visible to the next query."""
    sql = {"sql": "SELECT count(*) FROM state WHERE device_id = 'bus-3'"}
    assert client.post("/v1/sql", json=sql, headers=hub.headers("analyst")).json()["rows"] == [[0]]
    Lake(hub.settings.lake).append("state", state_table("bus-3", 7))
    assert client.post("/v1/sql", json=sql, headers=hub.headers("analyst")).json()["rows"] == [[7]]


def test_the_app_starts_on_an_empty_folder_and_says_so(tmp_path: Path, hub: Hub) -> None:
    from dataclasses import replace

    settings = replace(hub.settings, lake=tmp_path / "none", keys_file=hub.settings.keys_path)
    with TestClient(create_app(settings)) as client:
        error = client.post("/v1/sql", json={"sql": "SELECT 1"}, headers=hub.headers("analyst")).json()
    assert error["error"]["code"] == "lake_unavailable"
