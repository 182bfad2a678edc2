"""Building and checking one column of samples: Arrow arrays of the schema's types, and per row the
first reason it fails (wrong JSON type, missing, out of range, not an allowed value, bad ts).

Each column is converted as a whole (Arrow's own type inference, vectorized checks); only a column
that fails as a whole is looked at value by value to find the culprits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.schema import MAX_DETAIL_BYTES, TIMESTAMP, Column

_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)


class LazyValues:
    """One field of every sample, read from the dicts only when a slow path or a message needs it."""

    def __init__(self, samples: list[dict[str, Any]], name: str) -> None:
        self._samples = samples
        self._name = name
        self._values: list[Any] | None = None

    @classmethod
    def of(cls, values: list[Any]) -> LazyValues:
        lazy = cls([], "")
        lazy._values = values
        return lazy

    def list(self) -> list[Any]:
        if self._values is None:
            self._values = [s.get(self._name) for s in self._samples]
        return self._values

    def __getitem__(self, row: int) -> Any:
        if self._values is not None:
            return self._values[row]
        return self._samples[row].get(self._name)

    def __iter__(self) -> Any:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._values) if self._values is not None else len(self._samples)


class Checks:
    """Per-row first failing reason for one stream's gathered samples."""

    def __init__(self, n: int) -> None:
        self.reason: list[str | None] = [None] * n
        self.text: list[str] = [""] * n
        self.bad = np.zeros(n, dtype=bool)

    def fail(self, rows: np.ndarray | Sequence[int], reason: str, describe: Any) -> None:
        for r in rows:
            r = int(r)
            if not self.bad[r]:
                self.bad[r] = True
                self.reason[r] = reason
                self.text[r] = describe(r)

    def fail_mask(self, mask: np.ndarray, reason: str, describe: Any) -> None:
        self.fail(np.flatnonzero(mask & ~self.bad), reason, describe)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def infer(values: list[Any]) -> pa.Array | None:
    try:
        return pa.array(values)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return None


def column_values(
    column: Column,
    inferred: pa.Array | None,
    values: LazyValues,
    checks: Checks,
    may_hold_booleans: bool,
) -> pa.Array:
    """An Arrow array of the column's type; values of the wrong JSON type fail their row and become null.

    ``inferred`` is Arrow's own reading of the values (None when they did not convert as one type);
    only when it is not of an acceptable type are the values examined one by one.
    """
    name = column.name
    target = column.type
    if inferred is not None:
        t = inferred.type
        if pa.types.is_null(t):
            return pa.nulls(len(values), target)
        # Arrow reads true/false among floats as 1.0/0.0: look for booleans when there may be some.
        numeric = pa.types.is_int64(t) or pa.types.is_float64(t)
        if (
            target == pa.float64()
            and numeric
            and not (may_hold_booleans and any(type(v) is bool for v in values))
        ):
            return inferred.cast(target)
        if target == pa.int64() and pa.types.is_int64(t):
            return inferred
        if target == pa.string() and pa.types.is_string(t):
            return inferred
    # Slow path: find the values of the wrong type, one by one.
    clean: list[Any] = []
    for r, v in enumerate(values):
        ok = v is None
        if not ok:
            if target == pa.float64():
                ok = type(v) in (int, float) and (type(v) is float or _INT64_MIN <= v <= _INT64_MAX)
                if ok and type(v) is int:
                    v = float(v)
            elif target == pa.int64():
                ok = type(v) is int and _INT64_MIN <= v <= _INT64_MAX
            elif target == pa.string():
                ok = type(v) is str
                if not ok and name == "cell_id" and type(v) is int:
                    v, ok = str(v), True
        if ok:
            clean.append(v)
        else:
            clean.append(None)
            numeric = target in (pa.float64(), pa.int64())
            reason = "out_of_range" if numeric and type(v) is int else "wrong_type"
            checks.fail([r], reason, lambda _r, v=v: f"{name} is a JSON {_kind(v)}: {str(v)[:80]}")
    return pa.array(clean, target)


def ts_microseconds(inferred: pa.Array | None, values: LazyValues, checks: Checks) -> pa.Array:
    """Epoch microseconds (int64) from RFC 3339 text or integer epoch milliseconds.

    Devices of different operators send different forms, so a flush often mixes them: the integers
    and the texts are each converted as a whole, and only texts Arrow cannot parse are looked at
    one by one.
    """
    if inferred is not None and pa.types.is_int64(inferred.type):
        return _epoch_ms_to_us(inferred, values, checks)
    if inferred is not None and pa.types.is_string(inferred.type):
        return _texts_to_us(inferred, values, checks)
    raw = values.list()
    texts = pa.array([v if type(v) is str else None for v in raw], pa.string())
    small = [v if type(v) is int and -(2**53) <= v <= 2**53 else None for v in raw]
    for r, v in enumerate(raw):
        if v is None or type(v) is str:
            continue
        if type(v) is int:
            if small[r] is None:
                checks.fail([r], "ts_out_of_range", lambda _r, v=v: f"ts {v} is out of range")
        else:
            checks.fail([r], "invalid_ts", lambda _r, v=v: f"ts is a JSON {_kind(v)}, not text or integer")
    from_ints = pc.multiply(pa.array(small, pa.int64()), 1000)
    return pc.coalesce(_texts_to_us(texts, values, checks), from_ints)


def _texts_to_us(texts: pa.Array, values: LazyValues, checks: Checks) -> pa.Array:
    try:
        return _parse_rfc3339(texts)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    out: list[int | None] = []
    for r, v in enumerate(texts.to_pylist()):
        us: int | None = None
        if v is not None:
            try:
                us = _parse_rfc3339(pa.array([v], pa.string()))[0].as_py()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                checks.fail(
                    [r], "invalid_ts", lambda _r, v=v: f"ts {v[:60]!r} is not RFC 3339 with an offset"
                )
        out.append(us)
    return pa.array(out, pa.int64())


_TIMESTAMP_NS = pa.timestamp("ns", tz="UTC")


def _parse_rfc3339(text: pa.Array) -> pa.Array:
    """Epoch microseconds from RFC 3339 text with an offset; finer fractions are truncated."""
    try:
        return text.cast(TIMESTAMP).cast(pa.int64())
    except pa.ArrowInvalid:
        # Arrow refuses more fractional digits than the unit holds: read as ns, then truncate.
        return text.cast(_TIMESTAMP_NS).cast(TIMESTAMP, safe=False).cast(pa.int64())


def _epoch_ms_to_us(ms: pa.Array, values: LazyValues, checks: Checks) -> pa.Array:
    np_ms = ms.to_numpy(zero_copy_only=False)
    too_big = np.abs(np.nan_to_num(np_ms.astype("float64"), nan=0)) > 2**53
    if too_big.any():
        checks.fail_mask(too_big, "ts_out_of_range", lambda r: f"ts {values[r]} is out of range")
        ms = pc.if_else(pa.array(too_big), pa.scalar(None, pa.int64()), ms)
    return pc.multiply(ms, 1000)


def check_column(column: Column, array: pa.Array, values: LazyValues, checks: Checks) -> None:
    name = column.name
    if column.required:
        # Values of the wrong type are null here too, but their rows have failed already.
        missing = array.is_null().to_numpy(zero_copy_only=False)
        checks.fail_mask(missing, "missing_field", lambda r: f"{name} is missing")
    if column.minimum is not None or column.maximum is not None:
        nums = array.to_numpy(zero_copy_only=False).astype("float64")
        with np.errstate(invalid="ignore"):
            low = nums < column.minimum if column.minimum is not None else np.zeros(len(nums), bool)
            if column.maximum is None:
                high = np.zeros(len(nums), bool)
            elif column.maximum_exclusive:
                high = nums >= column.maximum
            else:
                high = nums > column.maximum
        bound = f"[{column.minimum}, {column.maximum}{')' if column.maximum_exclusive else ']'}"
        checks.fail_mask(low | high, "out_of_range", lambda r: f"{name} {values[r]} is outside {bound}")
    if column.allowed:
        allowed = pa.array(column.allowed, pa.string())
        invalid = pc.and_(pc.is_valid(array), pc.invert(pc.is_in(array, value_set=allowed)))
        checks.fail_mask(
            invalid.to_numpy(zero_copy_only=False),
            "invalid_value",
            lambda r: f"{name} {str(values[r])[:60]!r} is not one of {', '.join(column.allowed)}",
        )
    if name == "detail":
        too_long = pc.fill_null(pc.greater(pc.binary_length(array), MAX_DETAIL_BYTES), False)
        checks.fail_mask(
            too_long.to_numpy(zero_copy_only=False),
            "invalid_value",
            lambda r: f"detail is longer than {MAX_DETAIL_BYTES} bytes",
        )
