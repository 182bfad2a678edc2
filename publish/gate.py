"""The privacy gate: checks on a built dataset's output before it may become a release.

``check(built, settings)`` returns one line per problem (empty: pass).  For an aggregate dataset it checks
the rows that will be published, against the contributions behind them (computed by a separate query from
the statistics) and the files of earlier releases:

* columns: exactly the spec's, each with a derivation the schema's rules allow; no raw lake column
  (``operator``, ``device_id``, ``seq``, ``detail``, ``extra``, ``cell_id``, ``odometer_m``, ``lat`` ...) and
  no identifier-like name; no string column holding free text (long or sentence-like values), a known
  operator or device name, or so many distinct values that it identifies rows;
* resolution: times aligned to the dataset's time resolution (JST), mesh codes valid and no finer than the
  dataset's mesh level, ``mesh_level`` consistent with the code;
* privacy zones: no published mesh cell lies inside a privacy zone, no published point in one;
* k and dominance: every row's leaves hold at least k distinct devices and no operator above the
  dominance share (nor one device above the dataset's ``device_dominance``, where it has one: trips-od);
  the published device counts agree with the contributions and are at least k;
* subtraction: for every published row, its residual (its leaves not covered by published rows below it)
  passes k and dominance, and the devices found only in the residual (what the row's device count minus
  the published ones' reveals) are none or at least k; a measure with its own population (a rate's
  distance, a percentile over the samples that carry its value) passes too;
* days published before: the rows of such a day are exactly the rows of the release that published it
  first (a day is published once: ``publish.closure``); the checks above apply to the new days.

Under differential privacy (``built.internal["differential_privacy"]``) a row's publication must follow
from noisy values alone: k is checked on the published noisy device count, dominance on the noisy
per-operator device counts (``internal["dp_operator_devices"]``), which must add up to it; the true
contributions are not consulted (a check on them would make publication depend on true data), and the
subtraction checks are not made (differences of noisy values are noisy; docs/PRIVACY.md).

A dataset that is not an aggregate gets the privacy-zone check and the checks registered for it with
:func:`register_check`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import shapely

from publish.datasets import GATE_CHECKS, DatasetEntry, Use, dataset_entry, register_check
from publish.model import BuiltDataset
from publish.previous import Key, jst_day, read_earlier, release_folders, rows_by_key
from publish.rules import derivation_problems, raw_lake_columns
from store.geo import PrivacyZones, mesh_level, mesh_polygon
from store.settings import Settings

__all__ = ["check", "register_check"]

_IDENTIFIER_NAME = re.compile(
    r"^device$|^device_(id|key|hash|name|pseudonym)$|"
    r"(^|_)(operator|device_id|seq|detail|extra|cell_id|odometer|vin|plate|imei|imsi|msisdn|mac|"
    r"ip|email|phone|name|note|comment|text|lat|lon|latitude|longitude|payload|topic|pseudonym)($|_)"
)
_RESOLUTION_S = {"PT1H": 3600, "PT15M": 900, "PT1M": 60, "P1D": 86_400}
_JST_S = 9 * 3600
_MAX_LINES = 20  # per kind of failure; the rest is counted
_FREE_TEXT_LENGTH = 64
_HIGH_CARDINALITY = 50


def check(built: BuiltDataset, settings: Settings) -> list[str]:
    """Every problem found in ``built`` (empty: it may be released)."""
    entry = dataset_entry(built.spec.id)
    failures: list[str] = []
    failures += _privacy_zone_problems(built, settings)
    if entry.aggregate:
        column_problems = _column_problems(built, entry)
        failures += column_problems
        if not column_problems:  # the checks below read the spec's columns
            failures += _resolution_problems(built)
            # Rows of days published before are their first release's (which passed this gate when it
            # was made); they are checked for being exactly those rows, the new days for everything.
            failures += _cell_problems(_new_days_only(built, entry), entry, settings)
            failures += _earlier_release_problems(built, entry, settings)
    for extra_check in GATE_CHECKS.get(built.spec.id, []):
        failures += extra_check(built, settings)
    return failures


def _capped(label: str, lines: list[str]) -> list[str]:
    if len(lines) <= _MAX_LINES:
        return lines
    return [*lines[:_MAX_LINES], f"{label}: and {len(lines) - _MAX_LINES} more"]


def _describe(key_columns: Iterable[str], key: Key) -> str:
    parts = []
    for name, value in zip(key_columns, key, strict=True):
        if isinstance(value, datetime):
            value = value.isoformat()
        parts.append(f"{name}={value}")
    return " ".join(parts)


# -- columns ---------------------------------------------------------------------------------------------


def _column_problems(built: BuiltDataset, entry: DatasetEntry) -> list[str]:
    spec, table = built.spec, built.table
    out = []
    if table.column_names != [c.name for c in spec.columns]:
        out.append(f"columns {table.column_names} are not the spec's {[c.name for c in spec.columns]}")
    raw = raw_lake_columns()
    for name in table.column_names:
        if name in raw:
            out.append(f"column {name!r} is a raw lake column whose publish rule forbids publishing it")
        elif _IDENTIFIER_NAME.search(name):
            out.append(f"column {name!r} has an identifier-like or coordinate name")
    out += derivation_problems(spec, entry.derivations)
    identifiers = set(built.internal.get("identifiers", set()))
    for name in table.column_names:
        column = table.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        values = [v for v in column.to_pylist() if v is not None]
        distinct = set(values)
        if any(len(v) > _FREE_TEXT_LENGTH or v.count(" ") >= 3 for v in distinct):
            out.append(
                f"column {name!r} holds free text (values over {_FREE_TEXT_LENGTH} characters or sentences)"
            )
        if len(distinct) > _HIGH_CARDINALITY and len(distinct) > len(values) // 2:
            out.append(
                f"column {name!r} is identifier-like: {len(distinct)} distinct values in {len(values)} rows"
            )
        leaked = sorted(distinct & identifiers)
        if leaked:
            out.append(f"column {name!r} holds operator or device names: {', '.join(leaked[:5])}")
    return out


# -- resolution and privacy zones ------------------------------------------------------------------------


def _resolution_problems(built: BuiltDataset) -> list[str]:
    spec, table = built.spec, built.table
    out: list[str] = []
    step = _RESOLUTION_S.get(spec.time_resolution)
    for field in table.schema:
        if pa.types.is_timestamp(field.type):
            if step is None:
                out.append(f"column {field.name!r}: unknown time resolution {spec.time_resolution!r}")
                continue
            micros = table.column(field.name).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
            finer = [
                m for m in micros if m is not None and ((m // 1_000_000 + _JST_S) % step or m % 1_000_000)
            ]
            if finer:
                out.append(
                    f"column {field.name!r}: {len(finer)} times finer than {spec.time_resolution} (JST)"
                )
    if "mesh_code" in table.column_names:
        allowed = spec.mesh_level or 0
        levels = table.column("mesh_level").to_pylist() if "mesh_level" in table.column_names else None
        bad = []
        for i, code in enumerate(table.column("mesh_code").to_pylist()):
            try:
                level = mesh_level(int(code))
                mesh_polygon(int(code))
            except (ValueError, TypeError):
                bad.append(f"mesh_code {code!r} is not a JIS mesh code")
                continue
            if level > allowed:
                bad.append(f"mesh_code {code} is level {level}, finer than the allowed level {allowed}")
            if levels is not None and levels[i] != level:
                bad.append(f"mesh_code {code} has mesh_level {levels[i]}, its code says {level}")
        out += _capped("mesh codes", bad)
    return out


def _privacy_zone_problems(built: BuiltDataset, settings: Settings) -> list[str]:
    if settings.privacy_zones_file is None:
        return []
    zones = PrivacyZones.from_geojson(settings.privacy_zones_file)
    if not len(zones):
        return []
    table = built.table
    out = []
    if "mesh_code" in table.column_names:
        union = shapely.union_all(zones.polygons)
        inside = sorted(
            {c for c in table.column("mesh_code").to_pylist() if union.covers(mesh_polygon(int(c)))}
        )
        out += [f"mesh cell {c} lies inside a privacy zone" for c in inside]
    for lat_name, lon_name in (("lat", "lon"), ("latitude", "longitude")):
        if lat_name in table.column_names and lon_name in table.column_names:
            lat = table.column(lat_name).to_numpy(zero_copy_only=False)
            lon = table.column(lon_name).to_numpy(zero_copy_only=False)
            hits = int(zones.contains(lat, lon).sum())
            if hits:
                out.append(f"{hits} points ({lat_name}, {lon_name}) lie inside a privacy zone")
    return _capped("privacy zones", out)


# -- k, dominance, subtraction ---------------------------------------------------------------------------


class _Leaves:
    """Contributions per leaf key, and the k/dominance verdict of a union of leaves."""

    def __init__(
        self,
        contributions: pa.Table,
        keys: tuple[str, ...],
        k: int,
        dominance: float,
        device_dominance: float | None = None,
    ) -> None:
        self.k, self.dominance, self.device_dominance = k, dominance, device_dominance
        self.by_leaf: dict[Key, list[tuple[str, str, float]]] = defaultdict(list)
        columns = [contributions.column(c).to_pylist() for c in (*keys, "device", "operator", "weight")]
        for row in zip(*columns, strict=True):
            self.by_leaf[tuple(row[: len(keys)])].append((row[-3], row[-2], float(row[-1] or 0.0)))

    def devices(self, leaves: Iterable[Key]) -> set[str]:
        return {device for leaf in leaves for device, _, _ in self.by_leaf.get(leaf, [])}

    def verdict(self, leaves: set[Key]) -> str | None:
        devices = self.devices(leaves)
        if len(devices) < self.k:
            return f"{len(devices)} distinct devices < k={self.k}"
        weight: dict[str, float] = defaultdict(float)
        by_device: dict[str, float] = defaultdict(float)
        members: dict[str, set[str]] = defaultdict(set)
        for leaf in leaves:
            for device, operator, w in self.by_leaf.get(leaf, []):
                weight[operator] += w
                by_device[device] += w
                members[operator].add(device)
        total = sum(weight.values())
        share = max(weight.values()) / total if total > 0 else max(map(len, members.values())) / len(devices)
        if share > self.dominance:
            return f"one operator holds {share:.0%} > dominance share {self.dominance:.0%}"
        if self.device_dominance is not None and total > 0:
            top = max(by_device.values()) / total
            if top > self.device_dominance:
                return f"one device holds {top:.0%} > device dominance share {self.device_dominance:.0%}"
        return None


def _cell_problems(built: BuiltDataset, entry: DatasetEntry, settings: Settings) -> list[str]:
    table, keys = built.table, entry.key_columns
    out: list[str] = []
    device_columns = [
        name
        for name, d in entry.derivations.items()
        if any(
            use is Use.COUNT_DISTINCT and any(s.endswith(".device_id") for s in src) for use, src in d.parts
        )
    ]
    for name in device_columns:
        low = [v for v in table.column(name).to_pylist() if v is None or v < settings.publish_k]
        if low:
            out.append(f"column {name!r}: {len(low)} rows with fewer than k={settings.publish_k} devices")
    if built.internal.get("differential_privacy"):  # decided on noisy values only: check those, not truth
        return [*out, *_capped("cells", _dp_noisy_problems(built, keys, device_columns, settings))]
    contributions = built.internal.get("contributions")
    if not isinstance(contributions, pa.Table):
        return [*out, "cannot verify k and dominance: the built dataset carries no contributions"]
    leaves = _Leaves(
        contributions, keys, settings.publish_k, settings.publish_dominance, entry.device_dominance
    )
    rows = rows_by_key(table, keys)
    rollup = entry.rollup
    position = keys.index(rollup.column) if rollup is not None else -1

    def ancestors(key: Key) -> list[Key]:
        if rollup is None:
            return []
        return [(*key[:position], v, *key[position + 1 :]) for v in rollup.chain(key[position])]

    below: dict[Key, set[Key]] = {key: set() for key in rows}
    for leaf in leaves.by_leaf:
        for row in (leaf, *ancestors(leaf)):
            if row in below:
                below[row].add(leaf)
    cell_lines, residual_lines = [], []
    descendants: dict[Key, list[Key]] = {key: [] for key in rows}
    for row in rows:
        for ancestor in ancestors(row):
            if ancestor in descendants and ancestor != row:
                descendants[ancestor].append(row)
    for key in sorted(rows, key=lambda k: tuple(map(str, k))):
        verdict = leaves.verdict(below[key]) if below[key] else "no contributions behind it"
        if verdict:
            cell_lines.append(f"row {_describe(keys, key)}: {verdict}")
            continue
        for name in device_columns:
            published = rows[key][table.column_names.index(name)]
            actual = len(leaves.devices(below[key]))
            if published != actual:
                cell_lines.append(
                    f"row {_describe(keys, key)}: {name}={published} but {actual} devices contributed"
                )
        covered = set().union(*(below[r] for r in descendants[key]))
        residual = below[key] - covered
        if covered and residual:
            verdict = leaves.verdict(residual)
            if verdict:
                residual_lines.append(
                    f"row {_describe(keys, key)} minus the published rows below it reveals "
                    f"{len(residual)} suppressed cells: {verdict}"
                )
            only_residual = len(leaves.devices(below[key]) - leaves.devices(covered))
            if 0 < only_residual < settings.publish_k:
                residual_lines.append(
                    f"row {_describe(keys, key)} minus the published rows below it reveals "
                    f"{only_residual} devices found only in suppressed cells (< k={settings.publish_k})"
                )
    out += _capped("cells", cell_lines) + _capped("subtraction", residual_lines)
    out += _denominator_problems(built, settings)
    out += _population_problems(built, keys, ancestors, settings)
    return out


def _population_problems(
    built: BuiltDataset, keys: tuple[str, ...], ancestors: Callable[[Key], list[Key]], settings: Settings
) -> list[str]:
    """A statistic over only some samples of a row (a percentile of a measure some samples lack) is
    published only when the devices and operators behind its values pass k and dominance themselves."""
    populations = built.internal.get("populations")
    population_of: dict[str, str] = dict(built.internal.get("population_of") or {})
    if not isinstance(populations, pa.Table) or not population_of:
        return []
    table = built.table
    rows = rows_by_key(table, keys)
    lines = []
    for population in sorted(set(population_of.values())):
        counts = populations.column(population).to_pylist()
        contributions = populations.select([*keys, "device", "operator"]).append_column(
            "weight", pa.array([float(c or 0) for c in counts], pa.float64())
        )
        contributions = contributions.filter(pa.array([bool(c) for c in counts], pa.bool_()))
        leaves = _Leaves(contributions, keys, settings.publish_k, settings.publish_dominance)
        below: dict[Key, set[Key]] = {key: set() for key in rows}
        for leaf in leaves.by_leaf:
            for row in (leaf, *ancestors(leaf)):
                if row in below:
                    below[row].add(leaf)
        columns = [name for name, p in sorted(population_of.items()) if p == population]
        for key, row in sorted(rows.items(), key=lambda kv: tuple(map(str, kv[0]))):
            shown = [c for c in columns if row[table.column_names.index(c)] is not None]
            if not shown:
                continue
            verdict = leaves.verdict(below[key]) if below[key] else "no values behind it"
            if verdict:
                lines.append(f"row {_describe(keys, key)}: {', '.join(shown)} over {population}: {verdict}")
    return _capped("statistics", lines)


def _dp_noisy_problems(
    built: BuiltDataset, keys: tuple[str, ...], device_columns: list[str], settings: Settings
) -> list[str]:
    """Under differential privacy every published row must follow from its noisy values alone: its noisy
    per-operator device counts exist, add up to the published device count, and no operator's share of
    them exceeds the dominance share.  The true contributions are not consulted: a decision on them would
    not be covered by the noise."""
    per_operator: dict[Key, tuple[int, ...]] = built.internal.get("dp_operator_devices", {})
    threshold = built.internal.get("dp_threshold") or settings.publish_k
    rows = rows_by_key(built.table, keys)
    names = built.table.column_names
    lines = []
    for key in sorted(rows, key=lambda k: tuple(map(str, k))):
        counts = per_operator.get(key)
        if counts is None:
            lines.append(f"row {_describe(keys, key)}: no noisy operator counts behind it")
            continue
        for name in device_columns:
            if rows[key][names.index(name)] != max(0, sum(counts)):
                lines.append(f"row {_describe(keys, key)}: {name} is not the sum of its operator counts")
            elif rows[key][names.index(name)] < threshold:
                lines.append(f"row {_describe(keys, key)}: {name} is under the threshold {threshold}")
        positive = [max(0, c) for c in counts]
        share = max(positive) / sum(positive) if sum(positive) > 0 else 1.0
        if share > settings.publish_dominance:
            lines.append(
                f"row {_describe(keys, key)}: one operator holds {share:.0%} of the noisy device counts > "
                f"dominance share {settings.publish_dominance:.0%}"
            )
    return lines


def _denominator_problems(built: BuiltDataset, settings: Settings) -> list[str]:
    denominators = built.internal.get("denominators")
    keys: tuple[str, ...] = tuple(built.internal.get("denominator_keys", ()))
    if not isinstance(denominators, pa.Table) or not keys:
        return []
    leaves = _Leaves(denominators, keys, settings.publish_k, settings.publish_dominance)
    dependent = [c.name for c in built.spec.columns if c.name.startswith("events_per_")]
    lines = []
    for name in dependent:
        values = built.table.column(name).to_pylist()
        key_values = list(zip(*(built.table.column(k).to_pylist() for k in keys), strict=True))
        for value, key in zip(values, key_values, strict=True):
            if value is None:
                continue
            verdict = leaves.verdict({key}) if key in leaves.by_leaf else "no distance behind it"
            if verdict:
                lines.append(f"{name} for {_describe(keys, key)}: its distance fails: {verdict}")
    return _capped("denominators", lines)


# -- earlier releases ------------------------------------------------------------------------------------


def _new_days_only(built: BuiltDataset, entry: DatasetEntry) -> BuiltDataset:
    repeated = built.internal.get("repeated_days", frozenset())
    if not repeated:
        return built
    assert entry.time_column is not None
    days = [jst_day(v) for v in built.table.column(entry.time_column).to_pylist()]
    keep = pa.array([d not in repeated for d in days], pa.bool_())
    return replace(built, table=built.table.filter(keep))


def _earlier_release_problems(built: BuiltDataset, entry: DatasetEntry, settings: Settings) -> list[str]:
    """Every day an earlier release published: exactly the rows of the release that published it first."""
    folders: set[Path] = {Path(p) for p in built.internal.get("previous", [])}
    folders |= set(release_folders(Path(settings.releases) / built.spec.id))
    if not folders:
        return []
    assert entry.time_column is not None
    time_index = built.table.column_names.index(entry.time_column)
    first = read_earlier(folders, built.spec, entry.key_columns).first_publications(time_index)
    published: dict[date, set[tuple[object, ...]]] = defaultdict(set)
    for row in rows_by_key(built.table, entry.key_columns).values():
        published[jst_day(row[time_index])].add(row)
    lines = []
    day = built.date_from
    while day <= built.date_to:
        if day in first:
            before = set(first[day].rows)
            name = first[day].release.folder.name
            for row in sorted(published[day] - before, key=repr)[:3]:
                lines.append(f"{day}: row {row!r} is not one release {name} published for that day")
            missing = len(before - published[day])
            if missing:
                lines.append(f"{day}: {missing} row(s) release {name} published for that day are missing")
        day += timedelta(days=1)
    return _capped("earlier releases", lines)
