"""The data files of a release: Parquet, CSV and (for mesh datasets) GeoJSON of the cells.

All three hold the same rows in the same order.  The order is fixed by the data alone (sorted by the
dimension columns, then by the measures), so that the same published rows always give the same bytes:

* Parquet: zstd (level 9), format 2.6, data page v1, dictionary encoding, statistics, one row group per
  million rows; timestamps microsecond UTC (DESIGN.md: readable by DuckDB, Spark, Trino).  No creation
  time is written; the only writer-dependent bytes are pyarrow's ``created_by`` version string.
* CSV: UTF-8 (optionally with a byte order mark, for Excel), RFC 4180 with CRLF line ends, header row of
  column names, empty cell for a missing value, timestamps as ISO 8601 in JST with the ``+09:00`` offset,
  dates as ``YYYY-MM-DD``, numbers as the shortest text that reads back to the same value.
* GeoJSON (RFC 7946): one Polygon feature per JIS mesh cell, sorted by mesh code, one feature per line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from publish.model import BuiltDataset, DatasetSpec
from publish.publisher import JST
from store.geo import mesh_geojson

UTF8_BOM = b"\xef\xbb\xbf"
CSV_EOL = "\r\n"  # RFC 4180; Excel and every CSV reader accept it, Notepad shows it right
PARQUET_OPTIONS: dict[str, object] = {
    "compression": "zstd",
    "compression_level": 9,
    "version": "2.6",
    "data_page_version": "1.0",
    "use_dictionary": True,
    "write_statistics": True,
    "coerce_timestamps": "us",
    "allow_truncated_timestamps": False,
    "row_group_size": 1_000_000,
}
_COLUMN_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


def mesh_column(spec: DatasetSpec) -> str:
    """The column of JIS mesh codes of a spatial dataset: ``mesh_code``, else the first ``mesh*`` column."""
    names = [c.name for c in spec.columns]
    if "mesh_code" in names:
        return "mesh_code"
    for name in names:
        if name.startswith("mesh"):
            return name
    raise ValueError(f"Dataset {spec.id!r} is spatial but has no mesh column (mesh_code or mesh*)")


def published_table(built: BuiltDataset) -> pa.Table:
    """``built.table`` as it is published: the spec's columns in order, UTC microsecond timestamps, sorted."""
    spec = built.spec
    names = [c.name for c in spec.columns]
    missing = [n for n in names if n not in built.table.column_names]
    extra = [n for n in built.table.column_names if n not in names]
    if missing or extra:
        raise ValueError(
            f"Dataset {spec.id!r}: the table's columns do not match the spec "
            f"(missing {missing or 'none'}, not in the spec {extra or 'none'})"
        )
    for name in names:
        if not _COLUMN_NAME.fullmatch(name):
            raise ValueError(f"Dataset {spec.id!r}: column name {name!r} is not lower_snake_case ASCII")
    columns = []
    fields = []
    for column in spec.columns:
        data = built.table.column(column.name)
        target = column.type
        if pa.types.is_timestamp(target) or pa.types.is_timestamp(data.type):
            target = pa.timestamp("us", tz="UTC")
            if pa.types.is_timestamp(data.type) and data.type.tz is None:
                data = pc.assume_timezone(data, "UTC")  # naive timestamps are UTC (DESIGN.md: UTC in storage)
        elif pa.types.is_dictionary(data.type):
            data = data.cast(data.type.value_type)
        data = data.cast(target)  # safe cast: a lossy conversion is an error, never silent
        metadata = {
            "unit": column.unit,
            "title_en": column.title_en,
            "title_ja": column.title_ja,
            "kind": column.kind,
        }
        columns.append(data)
        fields.append(pa.field(column.name, target, metadata=metadata))
    table = pa.Table.from_arrays(columns, schema=pa.schema(fields))
    keys = sort_keys(spec, table.schema)
    if keys and table.num_rows > 1:
        table = table.sort_by([(name, "ascending") for name in keys])  # nulls last (the default)
    return table.combine_chunks()


def sort_keys(spec: DatasetSpec, schema: pa.Schema) -> list[str]:
    """Dimension columns first, then measures: every column whose type has an order."""
    ordered = [c.name for c in spec.columns if c.kind == "dimension"]
    ordered += [c.name for c in spec.columns if c.kind != "dimension"]
    return [name for name in ordered if _sortable(schema.field(name).type)]


def _sortable(data_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(data_type)
        or pa.types.is_floating(data_type)
        or pa.types.is_boolean(data_type)
        or pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_temporal(data_type)
        or pa.types.is_decimal(data_type)
    )


def write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, **PARQUET_OPTIONS)


def csv_table(table: pa.Table) -> pa.Table:
    """The table with timestamps as JST ISO 8601 text (``2024-06-01T09:00:00+09:00``)."""
    columns = []
    for field in table.schema:
        data = table.column(field.name)
        if pa.types.is_timestamp(field.type):
            data = jst_text(data)
        columns.append(data)
    return pa.Table.from_arrays(columns, names=table.column_names)


def jst_text(data: pa.ChunkedArray) -> pa.ChunkedArray:
    """Timestamps as JST text; each distinct instant is formatted once (time buckets repeat a lot)."""
    distinct = pc.unique(data).drop_null()
    text = pa.array([value.astimezone(JST).isoformat() for value in distinct.to_pylist()], pa.string())
    return pa.chunked_array([pc.take(text, pc.index_in(data, value_set=distinct))], pa.string())


def write_csv(table: pa.Table, path: Path, *, bom: bool) -> None:
    options = pacsv.WriteOptions(
        include_header=True, eol=CSV_EOL, quoting_style="needed", quoting_header="none", null_string=""
    )
    with path.open("wb") as out:
        if bom:
            out.write(UTF8_BOM)
        pacsv.write_csv(csv_table(table), out, write_options=options)


def mesh_codes(table: pa.Table, column: str) -> list[int]:
    """The distinct mesh codes of ``column``, ascending (nulls left out)."""
    values = pc.unique(table.column(column)).drop_null()
    return sorted(int(v) for v in np.asarray(values.to_pylist()).tolist())


def write_mesh_geojson(table: pa.Table, column: str, path: Path) -> None:
    """A FeatureCollection of the distinct cells of ``column`` with their number of published rows."""
    codes = mesh_codes(table, column)
    counts = pc.value_counts(table.column(column).drop_null()).to_pylist()
    rows = {int(item["values"]): int(item["counts"]) for item in counts}
    collection = mesh_geojson(codes, {code: {"rows": rows[code]} for code in codes})
    lines = [
        json.dumps(feature, ensure_ascii=False, separators=(",", ":")) for feature in collection["features"]
    ]
    body = ",\n".join(lines)
    path.write_text(f'{{"type":"FeatureCollection","features":[\n{body}\n]}}\n', encoding="utf-8")
