"""Result encoders for ``POST /v1/sql``: JSON, CSV, Parquet and Arrow IPC, one batch at a time.

Each encoder turns the schema, then each record batch, then the end of the result into bytes, so a result
is sent as it is fetched and never held whole as text.  They run in the SQL thread pool, never on the
event loop.

* ``json``: ``{"columns": [{"name", "type"}], "rows": [[...], ...], "truncated": b, "row_count": n}``;
  timestamps as RFC 3339 text, binary as base64, decimals as text (exact), NaN and infinities as null.
  A query that fails after rows were sent ends the document with ``"error": {...}`` and ``truncated: true``.
* ``csv``: a header row, then rows; binary as base64, lists and structs as JSON text, null as empty.
* ``parquet``: zstd, one row group per batch; the footer's key-value metadata holds
  ``corridorhub.truncated`` and ``corridorhub.row_count`` (``pyarrow.parquet.read_metadata(f).metadata``).
* ``arrow``: the Arrow IPC *stream* format (read it with ``pyarrow.ipc.open_stream``).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

Format = Literal["json", "csv", "parquet", "arrow"]

MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}


class Encoder:
    """Bytes for the start, each batch and the end of one result."""

    def begin(self, schema: pa.Schema) -> bytes:
        raise NotImplementedError

    def batch(self, batch: pa.RecordBatch) -> bytes:
        raise NotImplementedError

    def end(self, truncated: bool, row_count: int, error: dict[str, Any] | None = None) -> bytes:
        raise NotImplementedError


def encoder_for(fmt: str) -> Encoder:
    factories: dict[str, Callable[[], Encoder]] = {
        "json": JsonEncoder,
        "csv": CsvEncoder,
        "parquet": ParquetEncoder,
        "arrow": ArrowEncoder,
    }
    return factories[fmt]()


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def json_rows(batch: pa.RecordBatch) -> bytes:
    """The rows of ``batch`` as JSON arrays separated by commas (no enclosing brackets)."""
    columns = [column.to_pylist() for column in batch.columns]
    text = orjson.dumps(list(zip(*columns, strict=True)), default=_json_default)
    return text[1:-1]


class JsonEncoder(Encoder):
    def __init__(self) -> None:
        self._first = True

    def begin(self, schema: pa.Schema) -> bytes:
        columns = [{"name": f.name, "type": str(f.type)} for f in schema]
        return b'{"columns":' + orjson.dumps(columns) + b',"rows":['

    def batch(self, batch: pa.RecordBatch) -> bytes:
        if batch.num_rows == 0:
            return b""
        rows = json_rows(batch)
        if self._first:
            self._first = False
            return rows
        return b"," + rows

    def end(self, truncated: bool, row_count: int, error: dict[str, Any] | None = None) -> bytes:
        tail: dict[str, Any] = {"truncated": truncated, "row_count": row_count}
        if error is not None:
            tail["error"] = error
        return b"]," + orjson.dumps(tail)[1:]


class CsvEncoder(Encoder):
    def begin(self, schema: pa.Schema) -> bytes:
        self._schema = schema
        sink = io.BytesIO()
        pacsv.write_csv(_csv_ready(schema.empty_table()), sink, pacsv.WriteOptions(include_header=True))
        return sink.getvalue()

    def batch(self, batch: pa.RecordBatch) -> bytes:
        if batch.num_rows == 0:
            return b""
        sink = io.BytesIO()
        pacsv.write_csv(_csv_ready(batch), sink, pacsv.WriteOptions(include_header=False))
        return sink.getvalue()

    def end(self, truncated: bool, row_count: int, error: dict[str, Any] | None = None) -> bytes:
        return b""


def _csv_ready(data: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
    """Columns pyarrow's CSV writer cannot write, as text: binary as base64, nested values as JSON."""
    columns, changed = [], False
    for field, column in zip(data.schema, data.columns, strict=True):
        kind = field.type
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
            values = [None if v is None else base64.b64encode(v).decode("ascii") for v in column.to_pylist()]
        elif pa.types.is_nested(kind) or pa.types.is_duration(kind) or pa.types.is_interval(kind):
            values = [
                None if v is None else orjson.dumps(v, default=_json_default).decode()
                for v in column.to_pylist()
            ]
        elif pa.types.is_null(kind):
            values = [None] * len(column)
        else:
            columns.append(column)
            continue
        columns.append(pa.array(values, pa.string()))
        changed = True
    if not changed:
        return data
    names = data.schema.names
    if isinstance(data, pa.Table):
        return pa.table(columns, names=names)
    return pa.record_batch(columns, names=names)


class _Chunks(io.RawIOBase):
    """A write-only file whose written bytes are taken out with ``drain()``."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class ParquetEncoder(Encoder):
    def begin(self, schema: pa.Schema) -> bytes:
        self._sink = _Chunks()
        self._writer = pq.ParquetWriter(self._sink, schema, compression="zstd")
        return self._sink.drain()

    def batch(self, batch: pa.RecordBatch) -> bytes:
        if batch.num_rows:
            self._writer.write_batch(batch)
        return self._sink.drain()

    def end(self, truncated: bool, row_count: int, error: dict[str, Any] | None = None) -> bytes:
        self._writer.add_key_value_metadata(
            {
                "corridorhub.truncated": "true" if truncated else "false",
                "corridorhub.row_count": str(row_count),
            }
        )
        self._writer.close()
        return self._sink.drain()


class ArrowEncoder(Encoder):
    def begin(self, schema: pa.Schema) -> bytes:
        self._sink = _Chunks()
        self._writer = pa.ipc.new_stream(self._sink, schema)
        return self._sink.drain()

    def batch(self, batch: pa.RecordBatch) -> bytes:
        if batch.num_rows:
            self._writer.write_batch(batch)
        return self._sink.drain()

    def end(self, truncated: bool, row_count: int, error: dict[str, Any] | None = None) -> bytes:
        self._writer.close()
        return self._sink.drain()
