"""The one schema: invariants every consumer relies on, and the docs generated from it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from store.schema import (
    DEDUP_KEY,
    PARTITION_COLUMN,
    QUARANTINE,
    QUARANTINE_REASONS,
    SCHEMAS,
    STREAMS,
    Publish,
    Sensitivity,
    Source,
)
from store.schema_doc import render_data_contract

ROOT = Path(__file__).resolve().parents[2]


def test_every_table_is_partitioned_by_date_and_timestamps_are_microsecond_utc() -> None:
    for table in SCHEMAS.values():
        assert table[PARTITION_COLUMN].type == pa.date32()
        for field in table.arrow:
            if pa.types.is_timestamp(field.type):
                assert field.type.unit == "us" and field.type.tz == "UTC", (table.name, field.name)


def test_streams_share_the_hub_columns_and_the_dedup_key() -> None:
    for stream in STREAMS:
        names = [c.name for c in SCHEMAS[stream].columns]
        assert names[:5] == ["operator", "device_id", "ts", "seq", "device_type"]
        assert names[-3:] == ["extra", "received_at", "date"]
        assert set(DEDUP_KEY) <= set(names)
        assert len(names) == len(set(names))


def test_identifying_or_free_text_columns_are_never_published_as_values() -> None:
    unsafe = {Publish.DIMENSION, Publish.AGGREGATE}
    for table in SCHEMAS.values():
        for c in table.columns:
            if c.sensitivity in (Sensitivity.IDENTIFYING, Sensitivity.FREE_TEXT):
                assert c.publish not in unsafe, f"{table.name}.{c.name}"
            if c.sensitivity is Sensitivity.LOCATION:
                assert c.publish in (Publish.COARSEN_SPACE, Publish.COARSEN_TIME), f"{table.name}.{c.name}"


def test_quarantine_is_never_published_and_its_reasons_are_the_declared_ones() -> None:
    for c in SCHEMAS[QUARANTINE].columns:
        assert c.publish is Publish.DROP
    assert SCHEMAS[QUARANTINE]["reason"].allowed == tuple(QUARANTINE_REASONS)


def test_topic_and_hub_columns_are_required_where_ingest_always_fills_them() -> None:
    for stream in STREAMS:
        schema = SCHEMAS[stream]
        assert schema["operator"].source is Source.TOPIC and schema["operator"].required
        assert schema["ts"].required
        assert not schema["seq"].required


def test_docs_data_contract_matches_the_schema() -> None:
    committed = (ROOT / "docs" / "DATA_CONTRACT.md").read_text(encoding="utf-8")
    assert committed == render_data_contract(), (
        "docs/DATA_CONTRACT.md is stale: run `python -m store.schema_doc > docs/DATA_CONTRACT.md`"
    )
