"""Dates, times and timestamps as text, computed from their integers (``store._result_values``).

pyarrow's own conversions fail or lie on part of DuckDB's range: ``to_pylist`` raises on days beyond
Python's ``date`` (years past 9999 or before 1) and on nanoseconds, and its cast to text writes
``<value out of range: ...>``, ``0000-01-01`` for 1 BC or, zoned, the year 32103 for 294247.  So the text is
built here with ``pyarrow.compute`` (whole columns, no Python loop), from days since 1970 and the time of
day, as DuckDB prints it: years of five and more digits as they are (``10000-01-01``), years before 1 as
DuckDB's ``0001-01-01 (BC)`` (1 BC; DuckDB reads both back), ``24:00:00`` as itself, nanoseconds in full,
DuckDB's +-infinity as ``infinity`` / ``-infinity``.

Two layouts (docs/API.md, "Values"): ``json`` is RFC 3339 where RFC 3339 reaches
(``2025-03-14T09:27:00.589793+00:00``; the fraction left out when zero, six digits, nine for nanoseconds);
``csv`` is ``2025-03-14 09:27:00.589793Z`` (as many fraction digits as the unit has), which is what
pyarrow's CSV writer writes for values in its range: :func:`beyond_arrow_text` says when a column needs
this module's text in csv.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

Layout = Literal["json", "csv"]

__all__ = ["Layout", "beyond_arrow_text", "is_temporal", "temporal_text"]

_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_FRACTION_DIGITS = {"s": 0, "ms": 3, "us": 6, "ns": 9}
_SECONDS_PER_DAY = 86_400
#: 0001-01-01 and 10000-01-01 in days since 1970-01-01: where pyarrow's text is right.
_FIRST_DAY, _END_DAY = -719_162, 2_932_897
_INT64_TOP, _INT32_TOP = 2**63 - 1, 2**31 - 1


def is_temporal(kind: pa.DataType) -> bool:
    return bool(pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind))


def temporal_text(array: pa.Array, layout: Layout) -> pa.Array:
    """A string array of ``array``'s dates, times or timestamps in ``layout`` (nulls stay null)."""
    kind = array.type
    if pa.types.is_time(kind):
        raw = array.view(pa.int64() if kind.bit_width == 64 else pa.int32()).cast(pa.int64())
        return _clock(raw, kind.unit, layout)
    if pa.types.is_date(kind):
        raw = _raw_days(array)
        text = _calendar(raw)
        return _with_infinity(text, raw, _INT32_TOP)
    raw = array.view(pa.int64())
    per_day = _SECONDS_PER_DAY * _PER_SECOND[kind.unit]
    days, time_of_day = _floor_divmod(raw, per_day)
    parts = [_calendar(days), "T" if layout == "json" else " ", _clock(time_of_day, kind.unit, layout)]
    if kind.tz is not None:  # the integer is the UTC instant, whatever zone the column names
        parts.append("+00:00" if layout == "json" else "Z")
    text = pc.binary_join_element_wise(*parts, "")
    return _with_infinity(text, raw, _INT64_TOP)


def beyond_arrow_text(array: pa.Array) -> bool:
    """Whether ``array`` holds a value pyarrow's CSV writer would write wrongly: +-infinity, a year before 1
    or after 9999, a time of day of 24:00:00."""
    kind = array.type
    if not is_temporal(kind) or array.null_count == len(array):
        return False
    if pa.types.is_time(kind):
        raw = array.view(pa.int64() if kind.bit_width == 64 else pa.int32())
        return bool(pc.max(raw).as_py() >= _SECONDS_PER_DAY * _PER_SECOND[kind.unit])
    if pa.types.is_date(kind):
        low, high = (_FIRST_DAY, _END_DAY)
        raw = _raw_days(array)
    else:
        scale = _SECONDS_PER_DAY * _PER_SECOND[kind.unit]
        low, high = max(_FIRST_DAY * scale, -_INT64_TOP), min(_END_DAY * scale, _INT64_TOP)
        raw = array.view(pa.int64())
    least, most = (v.as_py() for v in pc.min_max(raw).values())
    return bool(least <= low or most >= high)


def _raw_days(array: pa.Array) -> pa.Array:
    if pa.types.is_date64(array.type):  # milliseconds; DuckDB sends date32, other producers may not
        return _floor_divmod(array.view(pa.int64()), _SECONDS_PER_DAY * 1000)[0]
    return array.view(pa.int32()).cast(pa.int64())


def _floor_divmod(values: pa.Array, divisor: int) -> tuple[pa.Array, pa.Array]:
    """Floor division and a non-negative remainder (``pc.divide`` truncates integers toward zero)."""
    quotient = pc.divide(values, divisor)
    remainder = pc.subtract(values, pc.multiply(quotient, divisor))
    negative = pc.less(remainder, 0)
    return (
        pc.if_else(negative, pc.subtract(quotient, 1), quotient),
        pc.if_else(negative, pc.add(remainder, divisor), remainder),
    )


def _calendar(days: pa.Array) -> pa.Array:
    """Days since 1970-01-01 as DuckDB's proleptic Gregorian date text (Howard Hinnant's
    ``civil_from_days``, http://howardhinnant.github.io/date_algorithms.html)."""
    era, day_of_era = _floor_divmod(pc.add(days.cast(pa.int64()), 719_468), 146_097)
    year_of_era = _div(
        pc.add(
            pc.subtract(day_of_era, _div(day_of_era, 1460)),
            pc.subtract(_div(day_of_era, 36_524), _div(day_of_era, 146_096)),
        ),
        365,
    )
    day_of_year = pc.subtract(
        day_of_era,
        pc.add(pc.multiply(year_of_era, 365), pc.subtract(_div(year_of_era, 4), _div(year_of_era, 100))),
    )
    month_index = _div(pc.add(pc.multiply(day_of_year, 5), 2), 153)  # March = 0
    day = pc.add(pc.subtract(day_of_year, _div(pc.add(pc.multiply(month_index, 153), 2), 5)), 1)
    month = pc.if_else(pc.less(month_index, 10), pc.add(month_index, 3), pc.subtract(month_index, 9))
    year = pc.add(pc.add(year_of_era, pc.multiply(era, 400)), pc.less_equal(month, 2).cast(pa.int64()))
    before_christ = pc.less_equal(year, 0)
    shown_year = pc.if_else(before_christ, pc.subtract(1, year), year)  # year 0 is 1 BC
    return pc.binary_join_element_wise(
        _digits(shown_year, 4),
        "-",
        _digits(month, 2),
        "-",
        _digits(day, 2),
        pc.if_else(before_christ, " (BC)", ""),
        "",
    )


def _clock(time_of_day: pa.Array, unit: str, layout: Layout) -> pa.Array:
    seconds, fraction = _floor_divmod(time_of_day, _PER_SECOND[unit])
    minutes, second = _floor_divmod(seconds, 60)
    hour, minute = _floor_divmod(minutes, 60)  # 24 for DuckDB's TIME '24:00:00'
    clock = pc.binary_join_element_wise(
        _digits(hour, 2), ":", _digits(minute, 2), ":", _digits(second, 2), ""
    )
    digits = _FRACTION_DIGITS[unit]
    if layout == "csv":
        if digits == 0:
            return clock
        return pc.binary_join_element_wise(clock, ".", _digits(fraction, digits), "")
    if digits < 6:  # json: microseconds, as Python's isoformat writes them
        fraction, digits = pc.multiply(fraction, 10 ** (6 - digits)), 6
    shown = pc.binary_join_element_wise(".", _digits(fraction, digits), "")
    return pc.binary_join_element_wise(clock, pc.if_else(pc.equal(fraction, 0), "", shown), "")


def _div(values: pa.Array, divisor: int) -> pa.Array:
    return pc.divide(values, divisor)  # only on values >= 0 here, where truncation is floor


def _digits(values: pa.Array, width: int) -> pa.Array:
    return pc.utf8_lpad(values.cast(pa.string()), width, "0")


def _with_infinity(text: pa.Array, raw: pa.Array, top: int) -> pa.Array:
    text = pc.if_else(pc.greater_equal(raw, top), "infinity", text)
    return pc.if_else(pc.less_equal(raw, -top), "-infinity", text)
