"""The value-encoding matrix: every DuckDB type x json/csv/parquet/arrow, through the HTTP API
(``POST /v1/sql`` on a real app over a real lake) and the CLI (``corridorhub sql --format json/csv``),
against DuckDB's own rendering.

The oracle is a plain DuckDB connection: ``v::VARCHAR`` of each value.  What came back is handed to DuckDB
again and rendered the same way: json and csv text is cast back to the column's type (``from_base64`` for
blobs, ``to_json`` for nested values); parquet and arrow bodies are read by DuckDB itself.  So a value counts
as encoded correctly when DuckDB reads back what DuckDB printed; the rules per format are in docs/API.md.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from api import create_app
from corridorhub.cli import cli
from store._temporal_text import temporal_text
from store.keys import KeyStore
from store.lake import Lake
from store.result_formats import (
    ARROW_FAILURE,
    ArrowEncoder,
    CsvEncoder,
    Encoder,
    JsonEncoder,
    ParquetEncoder,
    interval_text,
    python_values,
)
from store.settings import Settings

#: label -> a SELECT of one column ``v``, several rows with the type's special values.
TYPES: dict[str, str] = {
    "boolean": "SELECT * FROM (VALUES (true), (false), (NULL)) t(v)",
    "tinyint": "SELECT * FROM (VALUES ((-128)::TINYINT), (127::TINYINT)) t(v)",
    "smallint": "SELECT * FROM (VALUES ((-32768)::SMALLINT), (32767::SMALLINT)) t(v)",
    "integer": "SELECT * FROM (VALUES ((-2147483648)::INTEGER), (2147483647::INTEGER), (NULL)) t(v)",
    "bigint": "SELECT * FROM (VALUES ((-9223372036854775808)::BIGINT), (9223372036854775807::BIGINT)) t(v)",
    "utinyint": "SELECT * FROM (VALUES (0::UTINYINT), (255::UTINYINT)) t(v)",
    "usmallint": "SELECT * FROM (VALUES (65535::USMALLINT)) t(v)",
    "uinteger": "SELECT * FROM (VALUES (4294967295::UINTEGER)) t(v)",
    "ubigint": "SELECT * FROM (VALUES (18446744073709551615::UBIGINT), (0::UBIGINT)) t(v)",
    "hugeint": "SELECT * FROM (VALUES (123456789012345678901234567890::HUGEINT), (-1::HUGEINT)) t(v)",
    "hugeint extremes": "SELECT * FROM (VALUES (170141183460469231731687303715884105727::HUGEINT), "
    "(-170141183460469231731687303715884105727::HUGEINT - 1)) t(v)",
    "decimal": "SELECT * FROM (VALUES (1.5::DECIMAL(38, 10)), "
    "(-99999999999999999999.5::DECIMAL(38, 10))) t(v)",
    "decimal small": "SELECT * FROM (VALUES (12.345::DECIMAL(5, 3))) t(v)",
    "double": "SELECT * FROM (VALUES (1.5::DOUBLE), ('nan'::DOUBLE), ('inf'::DOUBLE), ('-inf'::DOUBLE), "
    "(-0.0::DOUBLE), (1e308::DOUBLE), (NULL)) t(v)",
    "float": "SELECT * FROM (VALUES (0.1::FLOAT), ('nan'::FLOAT), ('-inf'::FLOAT)) t(v)",
    "varchar": "SELECT * FROM (VALUES ('plain'), ('a,b \"quoted\"\nnew line'), ('日本語'), (NULL)) t(v)",
    "uuid": "SELECT * FROM (VALUES ('0e9a1f6c-6b63-4a5d-9a49-6a0f3c7d2b11'::UUID)) t(v)",
    "json": "SELECT * FROM (VALUES ('{\"a\": [1, 2]}'::JSON)) t(v)",
    "enum": "SELECT * FROM (VALUES ('sad'::ENUM('sad', 'ok')), ('ok'::ENUM('sad', 'ok'))) t(v)",
    "blob": "SELECT * FROM (VALUES ('\\xAA\\x00abc'::BLOB), ('\\x00'::BLOB), (NULL)) t(v)",
    "date": "SELECT * FROM (VALUES (DATE '2025-03-14'), ('infinity'::DATE), ('-infinity'::DATE), "
    "(DATE '0001-01-01')) t(v)",
    "time": "SELECT * FROM (VALUES (TIME '12:34:56.789'), (TIME '00:00:00')) t(v)",
    "timestamp": "SELECT * FROM (VALUES (TIMESTAMP '2025-03-14 09:27:00.589793'), ('infinity'::TIMESTAMP), "
    "('-infinity'::TIMESTAMP), (NULL)) t(v)",
    "timestamptz": "SELECT * FROM (VALUES (TIMESTAMPTZ '2025-03-14 09:27:00.5+00'), "
    "('infinity'::TIMESTAMPTZ), ('-infinity'::TIMESTAMPTZ)) t(v)",
    "timestamp_s": "SELECT * FROM (VALUES ('2025-03-14 09:27:00'::TIMESTAMP_S), "
    "('infinity'::TIMESTAMP_S), ('-infinity'::TIMESTAMP_S)) t(v)",
    "timestamp_ms": "SELECT * FROM (VALUES ('2025-03-14 09:27:00.123'::TIMESTAMP_MS), "
    "('-infinity'::TIMESTAMP_MS)) t(v)",
    "timestamp_ns": "SELECT * FROM (VALUES ('2025-03-14 09:27:00.123456789'::TIMESTAMP_NS), "
    "('infinity'::TIMESTAMP_NS)) t(v)",
    "timestamp_ns nanoseconds": "SELECT * FROM (VALUES ('2020-01-01 00:00:00.123456789'::TIMESTAMP_NS), "
    "(make_timestamp_ns(-1)), ('1677-09-22 00:00:00'::TIMESTAMP_NS)) t(v)",
    "time_ns": "SELECT * FROM (VALUES ('01:02:03.123456789'::TIME_NS), ('12:00:00'::TIME_NS)) t(v)",
    "time 24:00:00": "SELECT * FROM (VALUES ('24:00:00'::TIME), ('23:59:59.999999'::TIME)) t(v)",
    # beyond Python's date and pyarrow's text: years past 9999, before 1 (DuckDB's "(BC)"), the extremes
    "date extremes": "SELECT * FROM (VALUES ('0001-01-01 (BC)'::DATE), ('10000-01-01'::DATE), "
    "('5881580-07-10'::DATE), ('5877642-06-25 (BC)'::DATE), ('0044-03-15 (BC)'::DATE)) t(v)",
    "timestamp extremes": "SELECT * FROM (VALUES ('10000-01-01'::TIMESTAMP), ('294247-01-10'::TIMESTAMP), "
    "(TIMESTAMP '290309-12-22 (BC) 00:00:00'), ('0001-01-01 (BC) 12:00:00.5'::TIMESTAMP)) t(v)",
    "timestamptz extremes": "SELECT * FROM (VALUES ('10000-01-01'::TIMESTAMPTZ), "
    "('294247-01-10'::TIMESTAMPTZ), ('0001-01-01 (BC) 23:59:59.999999'::TIMESTAMPTZ)) t(v)",
    "timestamp_s extremes": "SELECT * FROM (VALUES ('10000-01-01'::TIMESTAMP_S), "
    "('0001-01-01 (BC)'::TIMESTAMP_S)) t(v)",
    "interval": "SELECT * FROM (VALUES (INTERVAL '1 year 2 months 3 days 04:05:06.789'), "
    "(-INTERVAL '1 day 1 second'), (INTERVAL '0 seconds'), (INTERVAL '200000 hours')) t(v)",
    "list": "SELECT * FROM (VALUES ([1, NULL, 3]), ([]), (NULL)) t(v)",
    "list of timestamps": "SELECT * FROM (VALUES "
    "([TIMESTAMP '2025-03-14 00:00:00', 'infinity'::TIMESTAMP])) t(v)",
    "array": "SELECT * FROM (VALUES ([1, 2]::INTEGER[2])) t(v)",
    "struct": "SELECT * FROM (VALUES ({'a': 1, 'b': 'x', 'c': [1.5::DOUBLE, 2.5::DOUBLE]})) t(v)",
    "struct with nan": "SELECT * FROM (VALUES ({'a': 'nan'::DOUBLE, 'b': DATE '2025-03-14'})) t(v)",
    "struct with extreme dates": "SELECT * FROM (VALUES ({'d': '5881580-07-10'::DATE, "
    "'t': TIMESTAMP '290309-12-22 (BC) 00:00:00', 'n': '01:02:03.123456789'::TIME_NS})) t(v)",
    "map of extreme dates": "SELECT * FROM (VALUES (MAP {'0001-01-01 (BC)'::DATE: '24:00:00'::TIME})) t(v)",
    "map": "SELECT * FROM (VALUES (MAP {'a': 1, 'b': 2}), (MAP {})) t(v)",
    "map with integer keys": "SELECT * FROM (VALUES (MAP {1: 'x', 2: 'y'})) t(v)",
    "union": "SELECT * FROM (VALUES (union_value(num := 2)::UNION(num INTEGER, str VARCHAR)), "
    "(union_value(str := 'x')::UNION(num INTEGER, str VARCHAR))) t(v)",
}

#: Types no format carries exactly: refused before the query runs.
REFUSED: dict[str, str] = {
    "uhugeint": "SELECT 340282366920938463463374607431768211455::UHUGEINT AS v",
    "bit": "SELECT '0101'::BIT AS v",
    "timetz": "SELECT '12:00:00+09'::TIMETZ AS v",
    "bignum": "SELECT 1e40::BIGNUM AS v",
    "nested uhugeint": "SELECT [1::UHUGEINT] AS v",
}

#: (type label, format) pairs refused with 400 unsupported_result, and why.
UNSUPPORTED = {
    ("interval", "parquet"): "interval",
    ("union", "parquet"): "union",
    ("hugeint extremes", "parquet"): "DECIMAL(38)",
    ("hugeint extremes", "arrow"): "DECIMAL(38)",
}
NESTED = {
    "list", "list of timestamps", "array", "struct", "struct with nan", "struct with extreme dates", "map",
    "map with integer keys", "map of extreme dates",
}  # fmt: skip


@pytest.fixture(scope="module")
def oracle() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    yield con
    con.close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str], Path]]:
    root = tmp_path_factory.mktemp("formats")
    Lake(root / "lake").ensure_tables()
    settings = Settings(lake=root / "lake", releases=root / "releases", sql_timeout_s=10.0)
    key = KeyStore(settings.keys_path).create("analyst", "matrix")
    with TestClient(create_app(settings)) as client:
        yield client, {"Authorization": f"Bearer {key}"}, root


def rendered(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[str, list[str | None]]:
    """DuckDB's type of ``v`` and its own rendering of each value."""
    kind = str(con.sql(sql).types[0])
    return kind, [row[0] for row in con.execute(f"SELECT v::VARCHAR FROM ({sql})").fetchall()]


def as_json_values(con: duckdb.DuckDBPyConnection, sql: str) -> list[Any]:
    """What DuckDB's own ``to_json`` makes of each nested value (the expectation for json and csv)."""
    return [
        None if r[0] is None else json.loads(r[0])
        for r in con.execute(f"SELECT to_json(v) FROM ({sql})").fetchall()
    ]


def cast_back(con: duckdb.DuckDBPyConnection, kind: str, texts: list[Any]) -> list[str | None]:
    """DuckDB's rendering of each received text after a cast back to ``kind``."""
    out: list[str | None] = []
    for text in texts:
        if text is None:
            out.append(None)
        elif kind == "BLOB":
            out.append(con.execute("SELECT from_base64(?)::VARCHAR", [text]).fetchall()[0][0])
        else:
            literal = text if isinstance(text, str) else json.dumps(text)
            out.append(con.execute(f"SELECT CAST(? AS {kind})::VARCHAR", [literal]).fetchall()[0][0])
    return out


def read_back(con: duckdb.DuckDBPyConnection, body: bytes, fmt: str, tmp_path: Path) -> list[str | None]:
    """DuckDB's rendering of the values of a parquet or arrow body, read by DuckDB."""
    if fmt == "parquet":
        path = tmp_path / "result.parquet"
        path.write_bytes(body)
        return [r[0] for r in con.execute("SELECT v::VARCHAR FROM read_parquet(?)", [str(path)]).fetchall()]
    table = pa.ipc.open_stream(body).read_all()
    con.register("received", table)
    try:
        return [r[0] for r in con.execute("SELECT v::VARCHAR FROM received").fetchall()]
    finally:
        con.unregister("received")


def json_column(document: dict[str, Any]) -> list[Any]:
    assert document["truncated"] is False and "error" not in document
    return [row[0] for row in document["rows"]]


def csv_column(text: str) -> list[str | None]:
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["v"]
    cells = [row[0] if row else "" for row in rows[1:]]  # a one-column null is an empty line
    return [cell if cell != "" else None for cell in cells]


def check_text_values(
    con: duckdb.DuckDBPyConnection, label: str, sql: str, received: list[Any], fmt: str
) -> None:
    kind, want = rendered(con, sql)
    if label in NESTED or label == "union":
        expected = as_json_values(con, sql)
        if label == "union":  # the member's value, as to_json shows it inside its one-key object
            expected = [None if v is None else next(iter(v.values())) for v in expected]
        got = [json.loads(v) if fmt == "csv" and v is not None and label != "union" else v for v in received]
        if fmt == "csv" and label == "union":  # the member's value as text
            expected = [v if v is None or isinstance(v, str) else json.dumps(v) for v in expected]
        if label in ("list of timestamps", "struct with nan", "struct with extreme dates"):
            expected = _duckdb_json_quirks(expected)
        assert got == expected, (label, fmt)
        return
    assert cast_back(con, kind, received) == want, (label, fmt, received)


_TO_JSON_TIMESTAMP = re.compile(r"^(\d{4,}-\d\d-\d\d(?: \(BC\))?) (\d\d:\d\d:\d\d[.\d]*)$")


def _duckdb_json_quirks(values: list[Any]) -> list[Any]:
    """``to_json`` prints timestamps with a space and NaN as a bare (invalid) number; the encoders print
    RFC 3339 and the text "nan" (docs/API.md): map DuckDB's forms onto the documented ones."""

    def fix(value: Any) -> Any:
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, str):
            return _TO_JSON_TIMESTAMP.sub(r"\1T\2", value)
        if isinstance(value, float) and value != value:
            return "nan"
        return value

    return [fix(v) for v in values]


def api(hub: tuple[TestClient, dict[str, str], Path], sql: str, fmt: str) -> Any:
    client, headers, _ = hub
    return client.post("/v1/sql", json={"sql": sql, "format": fmt}, headers=headers)


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet", "arrow"])
@pytest.mark.parametrize("label", TYPES)
def test_every_type_in_every_format_through_the_api(
    hub: tuple[TestClient, dict[str, str], Path], oracle: duckdb.DuckDBPyConnection, label: str, fmt: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    sql = TYPES[label]
    response = api(hub, sql, fmt)
    if (label, fmt) in UNSUPPORTED:
        assert response.status_code == 400, response.text[:300]
        error = response.json()["error"]
        assert error["code"] == "unsupported_result" and UNSUPPORTED[label, fmt] in error["message"]
        assert "'v'" in error["message"]
        return
    assert response.status_code == 200, response.text[:500]
    if fmt == "json":
        check_text_values(oracle, label, sql, json_column(response.json()), fmt)
    elif fmt == "csv":
        check_text_values(oracle, label, sql, csv_column(response.text), fmt)
    else:
        assert read_back(oracle, response.content, fmt, tmp_path) == rendered(oracle, sql)[1]


@pytest.mark.parametrize("fmt", ["json", "csv"])
@pytest.mark.parametrize("label", TYPES)
def test_every_type_through_the_cli_is_the_apis_bytes(
    hub: tuple[TestClient, dict[str, str], Path], oracle: duckdb.DuckDBPyConnection, label: str, fmt: str
) -> None:
    sql = TYPES[label]
    lake = str(hub[2] / "lake")
    result = CliRunner().invoke(cli, ["sql", sql, "--lake", lake, "--format", fmt], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    from_api = api(hub, sql, fmt)
    if fmt == "json":
        assert result.stdout_bytes == from_api.content + b"\n"  # docs/API.md: one newline after the document
        check_text_values(oracle, label, sql, json_column(json.loads(result.stdout)), fmt)
    else:
        assert result.stdout == from_api.text
        check_text_values(oracle, label, sql, csv_column(result.stdout), fmt)


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet", "arrow"])
@pytest.mark.parametrize("label", REFUSED)
def test_types_no_format_carries_are_refused_before_running(
    hub: tuple[TestClient, dict[str, str], Path], label: str, fmt: str
) -> None:
    response = api(hub, REFUSED[label], fmt)
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "sql_refused" and "'v'" in error["message"] and "VARCHAR" in error["message"]


@pytest.mark.parametrize("label", REFUSED)
def test_the_cli_refuses_them_too(hub: tuple[TestClient, dict[str, str], Path], label: str) -> None:
    result = CliRunner().invoke(
        cli, ["sql", REFUSED[label], "--lake", str(hub[2] / "lake"), "--format", "csv"]
    )
    assert result.exit_code == 1 and "cast it to VARCHAR" in result.output


def test_uhugeint_as_text_is_exact(hub: tuple[TestClient, dict[str, str], Path]) -> None:
    response = api(
        hub, "SELECT CAST(340282366920938463463374607431768211455::UHUGEINT AS VARCHAR) AS v", "json"
    )
    assert response.json()["rows"] == [["340282366920938463463374607431768211455"]]


def test_binary_is_one_representation_in_cli_table_and_api(
    hub: tuple[TestClient, dict[str, str], Path],
) -> None:
    sql = "SELECT '\\xAA\\x00abc'::BLOB AS v"
    table = CliRunner().invoke(cli, ["sql", sql, "--lake", str(hub[2] / "lake")]).output
    assert "qgBhYmM=" in table and api(hub, sql, "json").json()["rows"] == [["qgBhYmM="]]


# -- a failure after the body started: detectable in every format -----------------------------------------


def _started(encoder: Encoder, table: pa.Table) -> bytes:
    return encoder.begin(table.schema) + encoder.batch(table.to_batches()[0])


TABLE = pa.table({"v": [1, 2, 3]})


def test_a_failed_json_body_still_parses_and_carries_an_error() -> None:
    encoder = JsonEncoder()
    document = json.loads(_started(encoder, TABLE) + encoder.fail("The query exceeded the 3 s time limit"))
    assert (
        document["rows"] == [[1], [2], [3]] and document["truncated"] is True and document["row_count"] == 3
    )
    assert document["error"]["message"] == "The query exceeded the 3 s time limit"
    assert document["error"]["code"] == "sql_error"


def test_a_failed_csv_body_ends_with_an_error_row() -> None:
    encoder = CsvEncoder()
    text = (_started(encoder, TABLE) + encoder.fail('it "broke"\nbadly')).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[-1] == ["#ERROR", 'it "broke" badly'] and rows[:-1] == [["v"], ["1"], ["2"], ["3"]]


def test_a_failed_parquet_body_is_refused_by_readers(tmp_path: Path) -> None:
    encoder = ParquetEncoder()
    path = tmp_path / "failed.parquet"
    path.write_bytes(_started(encoder, TABLE) + encoder.fail("boom"))
    with pytest.raises(duckdb.Error):
        duckdb.connect().execute("SELECT * FROM read_parquet(?)", [str(path)]).fetchall()
    with pytest.raises(pa.ArrowException):
        pq.read_table(path)


def test_a_failed_arrow_stream_raises_in_readers() -> None:
    encoder = ArrowEncoder()
    body = _started(encoder, TABLE) + encoder.fail("boom")
    assert body.endswith(ARROW_FAILURE)
    with pytest.raises((pa.ArrowException, OSError)):
        pa.ipc.open_stream(body).read_all()


def test_intervals_print_as_duckdb_prints_them(oracle: duckdb.DuckDBPyConnection) -> None:
    for literal in (
        "1 year 2 months 3 days 04:05:06.789",
        "-1 day -00:00:01",
        "-11 months",
        "00:00:00.000001",
    ):
        value = oracle.sql(f"SELECT INTERVAL '{literal}' AS v").to_arrow_table().column(0)[0].as_py()
        duck = oracle.execute(f"SELECT INTERVAL '{literal}'::VARCHAR").fetchall()[0][0]
        assert interval_text(value.months, value.days, value.nanoseconds) == duck


def test_dates_and_timestamps_across_duckdbs_whole_range_print_as_duckdb_prints_them(
    oracle: duckdb.DuckDBPyConnection,
) -> None:
    """20,000 seeded random days and microseconds from DuckDB's first to its last date and timestamp, and
    the edges: the dates are DuckDB's text exactly; each timestamp (json and csv) casts back to itself."""
    rng = random.Random(9)
    days = [-2_147_483_646, 2_147_483_646, -719_528, -719_529, -1, 0, 59, 60, 2_932_896, 2_932_897]
    days += [rng.randint(-2_147_483_646, 2_147_483_646) for _ in range(10_000)]
    micros = [-9_223_372_022_400_000_000, 9_223_372_036_854_775_806, -1, 0, 253_402_300_800_000_000]
    micros += [rng.randint(-9_223_372_022_400_000_000, 9_223_372_036_854_775_806) for _ in range(10_000)]
    dates = pa.array(days, pa.int32()).view(pa.date32())
    stamps = pa.array(micros, pa.int64()).view(pa.timestamp("us", "UTC"))
    by_date = pa.table({"v": dates, "text": temporal_text(dates, "csv")})
    by_time = pa.table(
        {
            "v": pa.concat_arrays([stamps, stamps]),
            "text": pa.concat_arrays([temporal_text(stamps, "json"), temporal_text(stamps, "csv")]),
        }
    )
    oracle.register("by_date", by_date)
    oracle.register("by_time", by_time)
    try:
        wrong_dates = oracle.execute(
            "SELECT text, v::VARCHAR FROM by_date WHERE text IS DISTINCT FROM v::VARCHAR LIMIT 5"
        ).fetchall()
        wrong_times = oracle.execute(
            "SELECT text, v::VARCHAR FROM by_time "
            "WHERE TRY_CAST(text AS TIMESTAMPTZ) IS DISTINCT FROM v LIMIT 5"
        ).fetchall()
    finally:
        oracle.unregister("by_date")
        oracle.unregister("by_time")
    assert wrong_dates == [] and wrong_times == []


@pytest.mark.parametrize("label", ["union", "map", "date extremes", "timestamp extremes"])
def test_a_batch_cut_at_the_row_cap_keeps_its_values(oracle: duckdb.DuckDBPyConnection, label: str) -> None:
    """The service slices the batch that holds the row cap: a slice renders as the same rows did whole."""
    column = oracle.sql(TYPES[label]).to_arrow_table().column(0).combine_chunks()
    whole = python_values(column)
    assert python_values(column.slice(1)) == whole[1:]
