"""Result values made text: the rules json and csv share (``store.result_formats``; docs/API.md, "Values").

Arrow hands over what DuckDB computed; these functions turn each column into JSON-ready Python values
(``python_values``) or into columns pyarrow's CSV writer writes as their value (``csv_ready``): DuckDB's
+-infinity dates and timestamps as ``infinity``/``-infinity``, NaN and infinities as ``nan``/``inf``/``-inf``,
intervals as DuckDB prints them, binary as base64, maps as objects keyed by text, nested values as JSON.
"""

from __future__ import annotations

import base64
import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from store._temporal_text import beyond_arrow_text, is_temporal, temporal_text


def _float_text(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    return value


def interval_text(months: int, days: int, nanoseconds: int) -> str:
    """An interval as DuckDB prints (and parses) it: ``1 year 2 months 3 days 04:05:06.789``,
    ``-1 day -00:00:01``; microseconds, as DuckDB keeps them."""
    years = int(months / 12)
    parts = [
        f"{n} {unit}{'' if n in (1, -1) else 's'}"
        for n, unit in ((years, "year"), (months - 12 * years, "month"), (days, "day"))
        if n
    ]
    micros = int(nanoseconds / 1000)
    if micros or not parts:
        sign, micros = ("-", -micros) if micros < 0 else ("", micros)
        seconds, fraction = divmod(micros, 1_000_000)
        clock = f"{sign}{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        parts.append(clock + (f".{fraction:06d}".rstrip("0") if fraction else ""))
    return " ".join(parts)


def python_values(array: pa.Array) -> list[Any]:
    """The values of ``array`` as JSON-ready Python values (see the module docstring for the rules)."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        return python_values(array.dictionary_decode())
    if pa.types.is_struct(kind):
        fields = {kind.field(i).name: python_values(array.field(i)) for i in range(kind.num_fields)}
        valid = array.is_valid().to_pylist()
        return [
            {name: values[row] for name, values in fields.items()} if valid[row] else None
            for row in range(len(array))
        ]
    if pa.types.is_map(kind):
        as_list = array.cast(pa.list_(pa.struct([kind.key_field, kind.item_field])))
        entries = as_list.flatten()  # keys and values rendered by these rules, then regrouped per row
        pairs = iter(zip(python_values(entries.field(0)), python_values(entries.field(1)), strict=True))
        lengths = pc.list_value_length(as_list).to_pylist()
        return [
            None if n is None else {_key_text(k): v for k, v in (next(pairs) for _ in range(n))}
            for n in lengths
        ]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        flat = iter(python_values(array.flatten()))
        lengths = pc.list_value_length(array).to_pylist()
        return [None if n is None else [next(flat) for _ in range(n)] for n in lengths]
    if is_temporal(kind):
        return list(temporal_text(array, "json").to_pylist())
    if pa.types.is_union(kind):
        return _union_values(array)
    values = array.to_pylist()
    if pa.types.is_floating(kind) and pc.all(pc.is_finite(array)).as_py() is False:
        return [_float_text(v) for v in values]  # NaN or an infinity somewhere
    if pa.types.is_interval(kind):
        return [None if v is None else interval_text(v.months, v.days, v.nanoseconds) for v in values]
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return [_json_value(v) for v in values]
    if pa.types.is_fixed_size_binary(kind):
        return [_json_value(v) for v in values]
    return list(values)


def _union_values(array: pa.UnionArray) -> list[Any]:
    """Each row's member value, rendered by the rules of the member's type."""
    if array.offset:  # a slice (a batch cut at the row cap): type_codes would not be offset, its members are
        array = pa.concat_arrays([array])
    kind = array.type
    members = [python_values(array.field(i)) for i in range(kind.num_fields)]
    child_of = {code: index for index, code in enumerate(kind.type_codes)}
    codes = array.type_codes.to_pylist()
    if kind.mode == "dense":
        offsets = array.offsets.to_pylist()
        return [members[child_of[code]][offset] for code, offset in zip(codes, offsets, strict=True)]
    return [members[child_of[code]][row] for row, code in enumerate(codes)]


def _key_text(key: Any) -> str:
    value = _json_value(key)
    return value if isinstance(value, str) else orjson.dumps(value, default=json_default).decode()


def _json_value(value: Any) -> Any:
    """One value from ``to_pylist`` of a union or a map (no Arrow type to go by), made JSON-ready."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


def json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if hasattr(value, "months") and hasattr(value, "nanoseconds"):  # an interval inside a union
        return interval_text(value.months, value.days, value.nanoseconds)
    if hasattr(value, "total_seconds"):
        return value.total_seconds()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def csv_ready(data: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
    """Columns pyarrow's CSV writer cannot write as their value, as text by the module's rules."""
    columns, changed = [], False
    for column in data.columns:
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        kind = array.type
        if pa.types.is_dictionary(kind):
            array, kind, changed = array.dictionary_decode(), array.type.value_type, True
        if beyond_arrow_text(array):  # else pyarrow writes them as temporal_text would, unquoted
            array, changed = temporal_text(array, "csv"), True
        elif _needs_text(kind):
            values = python_values(array)
            array = pa.array(
                [v if v is None or isinstance(v, str) else orjson.dumps(v, default=json_default).decode()
                 for v in values],
                pa.string(),
            )  # fmt: skip
            changed = True
        columns.append(array)
    if not changed:
        return data
    names = data.schema.names
    if isinstance(data, pa.Table):
        return pa.table(columns, names=names)
    return pa.record_batch(columns, names=names)


def _needs_text(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
        or pa.types.is_nested(kind)
        or pa.types.is_duration(kind)
        or pa.types.is_interval(kind)
        or pa.types.is_null(kind)
    )
