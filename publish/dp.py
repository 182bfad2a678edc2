"""Optional differential privacy for published counts and means, with OpenDP.

Input: one row per device and cell (several rows of one device in one cell are merged): the cell's key
columns, a device column, integer count columns (e.g. the device's samples in the cell) and value columns
whose per-device mean is wanted (e.g. the device's mean speed in the cell).  Output: one row per released
cell with a noisy ``devices`` count, noisy count sums and noisy means, and a :class:`DpReport`.

The privacy unit is whatever the ``device`` column names: the datasets pass a **device-day** (a device's
samples of one JST day, ``publish.noise``).  Each unit's influence is bounded before any noise is added:

1. **Contribution bounding**: a device keeps at most ``contributions`` (L) cells; when it has more, the
   ones kept are chosen by HMAC-SHA256 of (seed, device, cell): deterministic for a seed, unrelated to
   the data.  In each kept cell its count is clamped to ``[0, cap]`` and its mean value to ``[lo, hi]``.
2. **Budget split**: ``devices_share`` of the release's epsilon goes to the device counts, the rest is
   split evenly over the other queries (each count, each mean's sum); without ``devices_share`` all
   queries get the same: basic sequential composition.
3. **Cells**: with a public ``universe`` of cells (e.g. every mesh of the corridor x every hour), exactly
   those cells are released, with discrete Laplace noise on ``devices`` (L1 sensitivity L).  With a
   public list of ``operators`` (and an ``operator`` column: each privacy unit belongs to one operator),
   the device count is noised per (cell, operator) instead, at the same sensitivity L (a unit still
   changes at most L counts by one): ``devices`` is the sum of the noisy operator counts and
   ``operator_devices`` holds them, so that operator dominance can be judged on noisy values.  Without one,
   which cells exist depends on the data, so the cells are chosen by OpenDP's ``make_laplace_threshold``
   (propose-test-release over the ``devices`` counts, sensitivity (L0, L1, Linf) = (L, L, 1)); its
   threshold is the smallest that keeps delta within the release's ``delta``.  That is where delta goes.
4. **Counts**: discrete Laplace (integers stay integers), L1 sensitivity ``L * cap``.
5. **Means**: the sum of the per-device values, centred on the middle of ``[lo, hi]``, gets continuous
   Laplace noise of L1 sensitivity ``L * (hi - lo) / 2``; the mean is ``mid + noisy_sum / noisy_devices``,
   clamped to ``[lo, hi]`` (post-processing, free).

Noise scales are solved with ``opendp.prelude.binary_search_param`` against each measurement's own privacy
map, so the (epsilon, delta) reported is what OpenDP proves, not what we hope.

**Reproducibility.**  OpenDP draws its noise from the operating system's CSPRNG and, by design, offers no
way to seed it (a seed would be a way to predict, and subtract, the noise).  So a DP release cannot be
rebuilt bit for bit: ``seed`` only fixes the contribution bounding.  A rebuild of a DP release must reuse
the stored noisy output (``DpReport.reproducible`` is False), and a new draw is a new release that spends
budget again (``publish.ledger``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import opendp.prelude as dp
import pyarrow as pa
import pyarrow.compute as pc

from store.errors import ConfigError

dp.enable_features("contrib")

DEVICES = "devices"
OPERATOR_DEVICES = "operator_devices"  # noisy device count per public operator (list, in ``operators`` order)
_THRESHOLD_MAX = 1 << 30
#: DpReport fields counted on the true rows (device-cells before and after bounding, non-empty cells): one
#: device more changes them by certainty, so they stay out of every release file (``DpReport.as_dict``).
TRUE_COUNTS = frozenset({"device_cells_in", "device_cells_dropped_by_bounding", "cells_before"})


@dataclass
class DpReport:
    """What differential privacy did to a table: the parameters for the release's metadata."""

    epsilon: float  # total epsilon proven by OpenDP's privacy maps (<= the epsilon asked for)
    delta: float  # total delta (from the threshold; 0 with a public universe of cells)
    epsilon_requested: float
    delta_requested: float
    contributions: int  # L: cells a device may contribute to
    mechanism: str
    queries: dict[str, dict[str, Any]] = field(default_factory=dict)  # per output column: noise and budget
    threshold: int | None = None  # minimum noisy device count of a released cell (no universe)
    cells_released: int = 0
    reproducible: bool = False  # OpenDP noise cannot be seeded: rebuilds reuse the stored output
    # Counts of the true data, for tests and the hub's own diagnostics: never in a release (TRUE_COUNTS).
    device_cells_in: int = 0
    device_cells_dropped_by_bounding: int = 0
    cells_before: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The report for the release's metadata: the parameters and what the noise decided, without the
        counts computed from the true data (:data:`TRUE_COUNTS`: they would tell one device more apart)."""
        return {k: v for k, v in asdict(self).items() if k not in TRUE_COUNTS}


def bound_contributions(
    rows: pa.Table, *, device: str, keys: Sequence[str], contributions: int, seed: bytes
) -> pa.Table:
    """``rows`` (one per device and cell) with at most ``contributions`` cells per device.

    Which cells a device keeps is decided by HMAC-SHA256(seed, device, cell): stable for a seed and
    independent of the values.
    """
    if contributions < 1:
        raise ConfigError(f"contributions must be at least 1, got {contributions}")
    if rows.num_rows == 0:
        return rows
    devices = rows.column(device).to_pylist()
    cells = _cell_texts(rows, keys)
    ranks = [_rank(seed, str(d), c) for d, c in zip(devices, cells, strict=True)]
    order = sorted(range(rows.num_rows), key=lambda i: (str(devices[i]), ranks[i]))
    kept: list[int] = []
    taken: dict[str, int] = {}
    for i in order:
        name = str(devices[i])
        if taken.get(name, 0) < contributions:
            taken[name] = taken.get(name, 0) + 1
            kept.append(i)
    return rows.take(pa.array(sorted(kept), pa.int64()))


def apply_dp(
    table: pa.Table,
    *,
    keys: Sequence[str],
    device: str,
    counts: Mapping[str, int] | Sequence[str],
    means: Mapping[str, tuple[float, float]],
    epsilon: float,
    delta: float,
    contributions: int,
    seed: bytes,
    universe: pa.Table | None = None,
    devices_share: float | None = None,
    operator: str | None = None,
    operators: Sequence[str] = (),
) -> tuple[pa.Table, DpReport]:
    """Noisy per-cell ``devices``, count sums and means of per-device ``table`` rows; see the module doc.

    ``counts`` maps a count column to its per-device cap (a plain list means cap 1); ``means`` maps a
    value column to its bounds.  ``universe``, when given, holds the public cells (``keys`` columns).
    ``operator`` names the column of each unit's operator, ``operators`` the public list of them (rows of
    other operators are dropped before bounding).
    """
    caps = dict(counts) if isinstance(counts, Mapping) else dict.fromkeys(counts, 1)
    _check(table, keys, device, caps, means, epsilon, delta, universe is not None)
    if operator is not None:
        if universe is None or not operators:
            raise ConfigError("apply_dp: noisy operator counts need a public universe and operator list")
        if operator not in table.column_names:
            raise ConfigError(f"apply_dp: column {operator!r} is not in the table ({table.column_names})")
        public = pa.array(list(operators), pa.string())
        table = table.filter(pc.is_in(table.column(operator).cast(pa.string()), value_set=public))
    per_device = _per_device(table, keys, device, caps, means, operator)
    bounded = bound_contributions(
        per_device, device=device, keys=keys, contributions=contributions, seed=seed
    )
    for name, cap in caps.items():
        bounded = _replace(bounded, name, pc.min_element_wise(pc.max_element_wise(bounded[name], 0), cap))
    for name, (lo, hi) in means.items():
        bounded = _replace(bounded, name, pc.min_element_wise(pc.max_element_wise(bounded[name], lo), hi))

    others = len(caps) + len(means)
    if devices_share is None or not others:
        devices_epsilon = share = epsilon / (1 + others)
    elif not 0 < devices_share < 1:
        raise ConfigError(f"apply_dp: devices_share must be in (0, 1), got {devices_share}")
    else:
        devices_epsilon, share = epsilon * devices_share, epsilon * (1 - devices_share) / others
    report = DpReport(
        epsilon=0.0,
        delta=0.0,
        epsilon_requested=epsilon,
        delta_requested=delta,
        contributions=contributions,
        mechanism="",
        device_cells_in=per_device.num_rows,
        device_cells_dropped_by_bounding=per_device.num_rows - bounded.num_rows,
    )
    # True per-cell aggregates of the bounded rows (centred sums for means).
    sums = [(name, "sum") for name in caps] + [(f"{name}__c", "sum") for name in means]
    centred = bounded
    for name, (lo, hi) in means.items():
        centred = centred.append_column(f"{name}__c", pc.subtract(centred[name], (lo + hi) / 2))
    cells = centred.group_by(list(keys)).aggregate([(device, "count"), *sums])
    true_devices = dict(zip(_cell_texts(cells, keys), cells[f"{device}_count"].to_pylist(), strict=True))
    report.cells_before = len(true_devices)

    # 1. Which cells, and their noisy device counts.
    per_operator: list[list[int]] | None = None
    if universe is not None and operator is not None:
        released_keys = universe.select(list(keys))
        texts = _cell_texts(released_keys, keys)
        noisy_devices, per_operator, eps = _operator_devices(
            bounded, keys, operator, operators, texts, contributions, devices_epsilon
        )
        report.mechanism = "discrete Laplace per (cell, operator) over a public universe of cells"
    elif universe is not None:
        released_keys = universe.select(list(keys))
        texts = _cell_texts(released_keys, keys)
        true = [true_devices.get(t, 0) for t in texts]
        noisy_devices, eps = _laplace_int(true, contributions, devices_epsilon)
        report.mechanism = "discrete Laplace over a public universe of cells"
    else:
        texts, noisy_devices, eps, report.delta, report.threshold = _threshold(
            true_devices, contributions, devices_epsilon, delta
        )
        released_keys = _keys_of(cells, keys, texts)
        report.mechanism = "Laplace threshold (cell selection) + discrete/continuous Laplace"
    report.epsilon += eps
    report.queries[DEVICES] = {
        "noise": "discrete Laplace" + (" per (cell, operator)" if per_operator is not None else ""),
        "epsilon": eps,
        "sensitivity_l1": contributions,
        "scale": int_scale(contributions, devices_epsilon),
    }
    noisy_devices = [max(0, int(v)) for v in noisy_devices]

    by_text = {t: i for i, t in enumerate(_cell_texts(cells, keys))}
    rows_of = [by_text.get(t) for t in texts]
    out: dict[str, Any] = {DEVICES: pa.array(noisy_devices, pa.int64())}
    # 2. Counts.
    for name, cap in caps.items():
        column = cells[f"{name}_sum"].to_pylist()
        true = [0 if i is None else int(column[i] or 0) for i in rows_of]
        noisy, eps = _laplace_int(true, contributions * cap, share)
        report.epsilon += eps
        report.queries[name] = {
            "noise": "discrete Laplace",
            "epsilon": eps,
            "sensitivity_l1": contributions * cap,
        }
        out[name] = pa.array([max(0, int(v)) for v in noisy], pa.int64())
    # 3. Means.
    for name, (lo, hi) in means.items():
        column = cells[f"{name}__c_sum"].to_pylist()
        true_f = [0.0 if i is None else float(column[i] or 0.0) for i in rows_of]
        noisy_f, eps = _laplace_float(true_f, contributions * (hi - lo) / 2, share)
        report.epsilon += eps
        report.queries[name] = {
            "noise": "Laplace",
            "epsilon": eps,
            "sensitivity_l1": contributions * (hi - lo) / 2,
            "bounds": [lo, hi],
        }
        mid = (lo + hi) / 2
        values = np.clip(mid + np.asarray(noisy_f) / np.maximum(noisy_devices, 1), lo, hi)
        out[name] = pa.array(values, pa.float64())

    if per_operator is not None:
        out[OPERATOR_DEVICES] = pa.array(per_operator, pa.list_(pa.int64()))
    result = released_keys
    for name, column in out.items():
        result = result.append_column(name, column)
    result = result.sort_by([(k, "ascending") for k in keys])
    report.cells_released = result.num_rows
    return result, report


def _operator_devices(
    bounded: pa.Table,
    keys: Sequence[str],
    operator: str,
    operators: Sequence[str],
    texts: list[str],
    contributions: int,
    epsilon: float,
) -> tuple[list[int], list[list[int]], float]:
    """Noisy device counts per (cell, operator) of the public universe, one vector query of L1 sensitivity
    L (a unit has one operator and at most L cells); a cell's count is the sum of its operators'."""
    grouped = bounded.group_by([*keys, operator]).aggregate([(operator, "count")])
    cell_texts = _cell_texts(grouped, keys)
    true = dict(
        zip(
            zip(cell_texts, grouped.column(operator).to_pylist(), strict=True),
            grouped.column(f"{operator}_count").to_pylist(),
            strict=True,
        )
    )
    flat = [true.get((t, o), 0) for t in texts for o in operators]
    noisy, eps = _laplace_int(flat, contributions, epsilon)
    width = len(operators)
    per_operator = [list(noisy[i * width : (i + 1) * width]) for i in range(len(texts))]
    return [sum(values) for values in per_operator], per_operator, eps


# -- OpenDP measurements -------------------------------------------------------------------------------------


def _laplace_int(values: list[int], sensitivity: int, epsilon: float) -> tuple[list[int], float]:
    """Discrete Laplace noise on ``values``; returns them and the epsilon OpenDP proves.  The one place
    integer noise is drawn (tests that need fixed noise replace this function, nothing else)."""
    measurement = _discrete_laplace(int_scale(sensitivity, epsilon))
    if not values:
        return [], float(_map(measurement, sensitivity))
    return list(measurement(values)), float(_map(measurement, sensitivity))


@functools.lru_cache(maxsize=256)
def int_scale(sensitivity: int, epsilon: float) -> float:
    """The discrete Laplace scale OpenDP's privacy map needs for ``epsilon`` at L1 ``sensitivity``."""
    return float(dp.binary_search_param(_discrete_laplace, d_in=sensitivity, d_out=epsilon))


def _discrete_laplace(scale: float) -> dp.Measurement:
    domain = dp.vector_domain(dp.atom_domain(T=int))
    return dp.m.make_laplace(domain, dp.l1_distance(T=int), scale)


def _laplace_float(values: list[float], sensitivity: float, epsilon: float) -> tuple[list[float], float]:
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))

    def make(scale: float) -> dp.Measurement:
        return dp.m.make_laplace(domain, dp.l1_distance(T=float), scale)

    d_in = float(sensitivity) if sensitivity > 0 else 1e-12
    measurement = make(dp.binary_search_param(make, d_in=d_in, d_out=epsilon))
    if not values:
        return [], float(_map(measurement, d_in))
    return list(measurement(values)), float(_map(measurement, d_in))


def _threshold(
    true_devices: dict[str, int], contributions: int, epsilon: float, delta: float
) -> tuple[list[str], list[int], float, float, int]:
    """Cells chosen by a Laplace threshold: (cell texts, noisy counts, epsilon, delta, threshold)."""
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=int))
    metric = dp.l01inf_distance(dp.absolute_distance(T=int))
    d_in = (contributions, contributions, 1)
    scale = float(contributions) / epsilon
    while float(_map(dp.m.make_laplace_threshold(domain, metric, scale, 1 << 20), d_in)[0]) > epsilon:
        scale *= 1.0 + 1e-9

    def delta_at(threshold: int) -> float:
        return float(_map(dp.m.make_laplace_threshold(domain, metric, scale, threshold), d_in)[1])

    low, high = 1, 2
    while delta_at(high) > delta:
        low, high = high, high * 2
        if high > _THRESHOLD_MAX:
            raise ConfigError(f"No threshold reaches dp_delta {delta:g}; raise it or give a public universe")
    while low < high:
        middle = (low + high) // 2
        if delta_at(middle) <= delta:
            high = middle
        else:
            low = middle + 1
    measurement = dp.m.make_laplace_threshold(domain, metric, scale, high)
    eps, used_delta = (float(x) for x in _map(measurement, d_in))
    noisy: dict[str, int] = measurement(true_devices) if true_devices else {}
    texts = sorted(noisy)
    return texts, [int(noisy[t]) for t in texts], eps, used_delta, high


# -- helpers -------------------------------------------------------------------------------------------------


def _check(
    table: pa.Table,
    keys: Sequence[str],
    device: str,
    caps: Mapping[str, int],
    means: Mapping[str, tuple[float, float]],
    epsilon: float,
    delta: float,
    has_universe: bool,
) -> None:
    missing = [c for c in (*keys, device, *caps, *means) if c not in table.column_names]
    if missing:
        raise ConfigError(f"apply_dp: columns {missing} are not in the table ({table.column_names})")
    if not keys:
        raise ConfigError("apply_dp needs at least one key column")
    if not epsilon > 0:
        raise ConfigError(f"Setting 'dp_epsilon' must be above 0, got {epsilon}")
    if not 0 <= delta < 1:
        raise ConfigError(f"Setting 'dp_delta' must be in [0, 1), got {delta}")
    if delta == 0 and not has_universe:
        raise ConfigError(
            "Differential privacy with dp_delta = 0 needs a public list of cells (universe): without one, "
            "which cells exist is itself private and their selection spends delta"
        )
    for name, cap in caps.items():
        if cap < 1:
            raise ConfigError(f"apply_dp: the per-device cap of {name!r} must be at least 1, got {cap}")
    for name, (lo, hi) in means.items():
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ConfigError(f"apply_dp: bounds of {name!r} must be finite with lo < hi, got {(lo, hi)}")


def _per_device(
    table: pa.Table,
    keys: Sequence[str],
    device: str,
    caps: Mapping[str, int],
    means: Mapping[str, tuple[float, float]],
    operator: str | None = None,
) -> pa.Table:
    """One row per (device, cell): counts summed, values averaged (the device's own mean in the cell)."""
    aggs = [(c, "sum") for c in caps] + [(m, "mean") for m in means]
    grouping = [device, *keys, *([operator] if operator is not None else [])]
    grouped = table.group_by(grouping).aggregate(aggs)
    names = {f"{c}_sum": c for c in caps} | {f"{m}_mean": m for m in means}
    grouped = grouped.rename_columns([names.get(n, n) for n in grouped.column_names])
    for m in means:  # a device whose values are all null in a cell contributes the middle of the bounds
        lo, hi = means[m]
        grouped = _replace(grouped, m, pc.fill_null(grouped[m].cast(pa.float64()), (lo + hi) / 2))
    for c in caps:
        grouped = _replace(grouped, c, pc.fill_null(grouped[c].cast(pa.int64()), 0))
    return grouped


def _replace(table: pa.Table, name: str, column: Any) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, column)


def _cell_texts(table: pa.Table, keys: Sequence[str]) -> list[str]:
    columns = [table.column(k).to_pylist() for k in keys]
    return [json.dumps(list(values), default=str) for values in zip(*columns, strict=True)]


def _keys_of(cells: pa.Table, keys: Sequence[str], texts: list[str]) -> pa.Table:
    index = {t: i for i, t in enumerate(_cell_texts(cells, keys))}
    return cells.select(list(keys)).take(pa.array([index[t] for t in texts], pa.int64()))


def _map(measurement: dp.Measurement, d_in: Any) -> Any:
    """The measurement's privacy map at ``d_in`` (OpenDP's ``map`` has no type hints)."""
    return measurement.map(d_in)  # type: ignore[no-untyped-call]


def _rank(seed: bytes, device: str, cell: str) -> bytes:
    return hmac.new(seed, f"{device}\x00{cell}".encode(), hashlib.sha256).digest()
