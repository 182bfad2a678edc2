"""Query results as bytes: JSON, CSV, Parquet and Arrow IPC, one batch at a time, for the API and the CLI.

Each encoder turns the schema, then each record batch, then the end of the result into bytes, so a result is
sent as it is fetched and never held whole as text.  ``fail(message)`` ends a body that has started when
the query fails half-way, so that a client can tell (docs/API.md, "When a result fails half-way").

Values, the same in every text format (json and csv; the conversions live in ``store._result_values``):

* timestamps: json RFC 3339 text; csv ``YYYY-MM-DD HH:MM:SS.ffffff`` (``Z`` when zoned); dates ISO 8601;
  built from the integers (``store._temporal_text``), so years past 9999, DuckDB's ``(BC)`` years, TIME
  ``24:00:00`` and nanoseconds come out as DuckDB prints them;
  DuckDB's ``infinity`` and ``-infinity`` dates and timestamps as the text ``infinity`` / ``-infinity``
  (as DuckDB prints them); in parquet and arrow they stay the extreme integers DuckDB stores for them
  (DuckDB reads them back as infinity);
* doubles: NaN and infinities as DuckDB prints them, ``nan``, ``inf``, ``-inf`` (a JSON string: JSON has
  no such number);
* decimals and HUGEINT exactly, as text in json; intervals as DuckDB prints them (``1 year 2 months 3 days
  04:05:06.789``, which DuckDB casts back); binary (BLOB) as base64; enums as their text; lists, structs and
  unions as JSON values (in csv lists and structs as JSON text, a union's member as its text), maps as
  JSON objects keyed by the key's text.
* Types DuckDB cannot hand over exactly are refused before anything runs (:func:`check_sendable`):
  UHUGEINT (exported wrapped: the max came back as -1), BIT (exported as DuckDB's internal bytes), TIME
  WITH TIME ZONE (the offset is dropped), BIGNUM (an opaque blob).  Cast them to VARCHAR.
* Parquet cannot hold intervals or unions: refused before the body starts.  Parquet and Arrow cannot hold
  HUGEINT values beyond 38 digits (DuckDB hands HUGEINT over as DECIMAL(38, 0)): :meth:`Encoder.check`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from duckdb.sqltypes import DuckDBPyType

from store._result_values import csv_ready, interval_text, json_default, python_values
from store.errors import QueryRefused

__all__ = [
    "MEDIA_TYPES",
    "ArrowEncoder",
    "CsvEncoder",
    "Encoder",
    "Format",
    "JsonEncoder",
    "ParquetEncoder",
    "check_sendable",
    "csv_ready",
    "encode_table",
    "encoder_for",
    "interval_text",
    "json_rows",
    "python_values",
]

Format = Literal["json", "csv", "parquet", "arrow"]

MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}

#: DuckDB types whose Arrow form is not their value, and why (DuckDBPyType ids).
UNSENDABLE: dict[str, str] = {
    "uhugeint": "DuckDB hands UHUGEINT over wrapped into a signed 128-bit decimal (its max would read -1)",
    "bit": "DuckDB hands BIT over as its internal bytes",
    "time with time zone": "DuckDB hands TIME WITH TIME ZONE over without its offset",
    "bignum": "DuckDB hands BIGNUM over as an opaque blob",
    "varint": "DuckDB hands VARINT over as an opaque blob",
}

#: The first line of a csv body's failure (docs/API.md).
CSV_ERROR_MARK = "#ERROR"


def check_sendable(columns: Sequence[str], types: Sequence[DuckDBPyType]) -> None:
    """Raise :class:`QueryRefused` naming the first column whose DuckDB type no format can carry exactly."""
    for name, kind in zip(columns, types, strict=True):
        stack = [kind]
        while stack:
            current = stack.pop()
            reason = UNSENDABLE.get(current.id)
            if reason is not None:
                raise QueryRefused(
                    f"Column {name!r} is {kind}, which results cannot carry exactly ({reason}): "
                    f"cast it to VARCHAR, e.g. CAST({name} AS VARCHAR)"
                )
            if current.id in ("struct", "list", "map", "union", "array"):
                stack.extend(child for _, child in current.children if isinstance(child, DuckDBPyType))


class Encoder:
    """Bytes for the start, each batch, the end, or the failure of one result."""

    def begin(self, schema: pa.Schema) -> bytes:
        raise NotImplementedError

    def batch(self, batch: pa.RecordBatch) -> bytes:
        raise NotImplementedError

    def end(self, truncated: bool, row_count: int, error: dict[str, Any] | None = None) -> bytes:
        raise NotImplementedError

    def check(self, batch: pa.RecordBatch) -> None:
        """Raise ValueError, naming the column, when ``batch`` holds a value this format cannot hold exactly
        (call it on rows read before the body starts, to refuse them with a status)."""
        return None

    def fail(self, message: str, *, code: str = "sql_error", status: int = 400) -> bytes:
        """The bytes that end a started body after the query failed (what a client detects: docs/API.md);
        ``code`` and ``status`` are what the error would have been before the body started."""
        raise NotImplementedError


def encoder_for(fmt: str) -> Encoder:
    factories: dict[str, Callable[[], Encoder]] = {
        "json": JsonEncoder,
        "csv": CsvEncoder,
        "parquet": ParquetEncoder,
        "arrow": ArrowEncoder,
    }
    return factories[fmt]()


def json_rows(batch: pa.RecordBatch) -> bytes:
    """The rows of ``batch`` as JSON arrays separated by commas (no enclosing brackets)."""
    columns = [python_values(column) for column in batch.columns]
    text = orjson.dumps(list(zip(*columns, strict=True)), default=json_default)
    return text[1:-1]


# -- encoders -----------------------------------------------------------------------------------------------


class JsonEncoder(Encoder):
    """``{"columns": [{"name", "type"}], "rows": [[...]], "truncated": b, "row_count": n}``; on failure
    the document still closes, with ``"truncated": true`` and ``"error": {"status", "code", "message"}``."""

    def __init__(self) -> None:
        self._first = True
        self._rows = 0
        self._closed = False

    def begin(self, schema: pa.Schema) -> bytes:
        columns = [{"name": f.name, "type": str(f.type)} for f in schema]
        return b'{"columns":' + orjson.dumps(columns) + b',"rows":['

    def batch(self, batch: pa.RecordBatch) -> bytes:
        if batch.num_rows == 0:
            return b""
        rows = json_rows(batch)
        self._rows += batch.num_rows
        if self._first:
            self._first = False
            return rows
        return b"," + rows

    def end(self, truncated: bool, row_count: int, error: dict[str, Any] | None = None) -> bytes:
        self._closed = True
        tail: dict[str, Any] = {"truncated": truncated, "row_count": row_count}
        if error is not None:
            tail["error"] = error
        return b"]," + orjson.dumps(tail)[1:]

    def fail(self, message: str, *, code: str = "sql_error", status: int = 400) -> bytes:
        if self._closed:
            return b""
        return self.end(True, self._rows, {"status": status, "code": code, "message": message})


class CsvEncoder(Encoder):
    """A header row, then rows (text quoted, null as empty); on failure one last row ``#ERROR,<message>``."""

    def begin(self, schema: pa.Schema) -> bytes:
        sink = io.StringIO()  # names quoted only where needed (pyarrow quotes every string)
        csv.writer(sink, lineterminator="\n").writerow(schema.names)
        return sink.getvalue().encode()

    def batch(self, batch: pa.RecordBatch) -> bytes:
        if batch.num_rows == 0:
            return b""
        sink = io.BytesIO()
        pacsv.write_csv(csv_ready(batch), sink, pacsv.WriteOptions(include_header=False))
        return sink.getvalue()

    def end(self, truncated: bool, row_count: int, error: dict[str, Any] | None = None) -> bytes:
        return self.fail(str(error.get("message", error))) if error is not None else b""

    def fail(self, message: str, *, code: str = "sql_error", status: int = 400) -> bytes:
        sink = io.StringIO()
        csv.writer(sink, lineterminator="\n").writerow([CSV_ERROR_MARK, " ".join(message.split())])
        return sink.getvalue().encode()


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
    """zstd, one row group per batch; the footer's key-value metadata holds ``corridorhub.truncated`` and
    ``corridorhub.row_count``.  On failure the footer is never written: no reader opens the file."""

    def begin(self, schema: pa.Schema) -> bytes:
        for field in schema:
            if _holds(field.type, lambda t: pa.types.is_interval(t) or pa.types.is_union(t)):
                raise ValueError(
                    f"column {field.name!r} is an interval or a union, which Parquet cannot hold: cast it to "
                    f"VARCHAR, or ask for arrow or json"
                )
        self._sink = _Chunks()
        self._schema = pa.schema([_parquet_field(field) for field in schema])
        self._writer = pq.ParquetWriter(self._sink, self._schema, compression="zstd")
        return self._sink.drain()

    def check(self, batch: pa.RecordBatch) -> None:
        _check_decimal_range(batch, "Parquet")

    def batch(self, batch: pa.RecordBatch) -> bytes:
        self.check(batch)
        if batch.num_rows:
            columns = [_in_milliseconds(c) if pa.types.is_timestamp(c.type) else c for c in batch.columns]
            self._writer.write_batch(pa.record_batch(columns, schema=self._schema))
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

    def fail(self, message: str, *, code: str = "sql_error", status: int = 400) -> bytes:
        return b""  # no footer, no closing "PAR1": every Parquet reader refuses the file


def _parquet_field(field: pa.Field) -> pa.Field:
    """Parquet has no seconds unit (pyarrow would multiply by 1000 on writing, and overflow on infinity)."""
    kind = field.type
    if pa.types.is_timestamp(kind) and kind.unit == "s":
        return field.with_type(pa.timestamp("ms", kind.tz))
    return field


def _in_milliseconds(column: pa.Array) -> pa.Array:
    """A timestamp[s] column in milliseconds, DuckDB's +-infinity kept as the extreme integers it uses."""
    kind = column.type
    if kind.unit != "s":
        return column
    raw = column.view(pa.int64())
    top = 2**63 - 1
    infinite = pc.or_(pc.greater_equal(raw, top), pc.less_equal(raw, -top))
    scaled = pc.multiply(pc.if_else(infinite, 0, raw), 1000)
    return pc.if_else(infinite, raw, scaled).view(pa.timestamp("ms", kind.tz))


#: What an Arrow stream that failed ends with: a continuation marker and a message length no stream holds,
#: so that readers raise instead of taking the stream for complete (it also lacks the end-of-stream marker).
ARROW_FAILURE = b"\xff\xff\xff\xff\xff\xff\xff\x7f"


class ArrowEncoder(Encoder):
    """The Arrow IPC *stream* format (``pyarrow.ipc.open_stream``)."""

    def begin(self, schema: pa.Schema) -> bytes:
        self._sink = _Chunks()
        self._writer = pa.ipc.new_stream(self._sink, schema)
        return self._sink.drain()

    def check(self, batch: pa.RecordBatch) -> None:
        _check_decimal_range(batch, "Arrow")

    def batch(self, batch: pa.RecordBatch) -> bytes:
        self.check(batch)
        if batch.num_rows:
            self._writer.write_batch(batch)
        return self._sink.drain()

    def end(self, truncated: bool, row_count: int, error: dict[str, Any] | None = None) -> bytes:
        self._writer.close()
        return self._sink.drain()

    def fail(self, message: str, *, code: str = "sql_error", status: int = 400) -> bytes:
        return self._sink.drain() + ARROW_FAILURE


#: The largest magnitude a DECIMAL(38) holds; DuckDB hands HUGEINT over as DECIMAL(38, 0), whose extremes
#: (39 digits) readers of Parquet and Arrow cannot read back (DuckDB itself fails on them).
_DECIMAL38_MAX = Decimal(10**38 - 1)


def _check_decimal_range(batch: pa.RecordBatch, format_name: str) -> None:
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if not pa.types.is_decimal(field.type) or field.type.precision < 38 or not len(column):
            continue
        low, high = pc.min_max(column).values()
        for value in (low.as_py(), high.as_py()):
            if value is not None and abs(value) > _DECIMAL38_MAX:
                raise ValueError(
                    f"column {field.name!r} holds {value}, beyond what {format_name}'s DECIMAL(38) holds: "
                    f"cast it to VARCHAR, or ask for json or csv"
                )


def _holds(kind: pa.DataType, test: Callable[[pa.DataType], bool]) -> bool:
    stack = [kind]
    while stack:
        current = stack.pop()
        if test(current):
            return True
        stack.extend(current.field(i).type for i in range(getattr(current, "num_fields", 0)))
    return False


def encode_table(table: pa.Table, fmt: Format, truncated: bool) -> bytes:
    """A whole (small) result in one format, as the CLI writes it."""
    encoder = encoder_for(fmt)
    parts = [encoder.begin(table.schema)]
    parts += [encoder.batch(batch) for batch in table.to_batches()]
    parts.append(encoder.end(truncated, table.num_rows))
    return b"".join(parts)
