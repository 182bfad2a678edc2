"""Cell suppression for the aggregate datasets: k distinct devices, operator dominance, complementary
suppression across totals and grid levels, and consistency with earlier releases.

Input: the candidate rows of a dataset (every cell at every level, with its statistics) and the
*contributions* behind its finest cells (leaves): one row per leaf and device with the device's operator
and weight (samples, events or distance).  A coarser row (a 1 km cell, a per-day total) is the union of the
leaves below it (``Rollup``), so its devices and operator shares are computed from the same contributions.

Rules, in order (docs/PRIVACY.md explains each and why):

1. **k**: a row whose leaves hold fewer than ``k`` distinct devices is suppressed.
2. **Dominance**: a row where one operator holds more than ``dominance`` of the weight is suppressed
   (when the weight is all zero, the operator's share of the devices counts instead); with
   ``device_dominance`` (``trips-od``), so is a row where one device holds more than that share.
3. **Days published before**: a row of a day that an earlier release of the dataset published is not
   published from this build: the release repeats that earlier release's rows for the day instead
   (``publish.closure``; ``publish.cells`` puts them in).
4. **Complementary suppression** (the *residual rule*): for every published row P, the leaves under P that
   no published row below P covers form P's *residual*: its aggregate is what subtraction reveals
   (P minus the published rows below it).  A non-empty residual must itself pass k and dominance, and
   the devices of P found in no published row below it (what P's device count minus theirs reveals)
   must be none or at least k; while one does not, the smallest published row directly below P (least
   weight, then fewest devices) is suppressed too, which adds its leaves to the residual.  The
   residual grows to P itself at worst, which passes, so the loop ends.  Published values of a tree of
   nested sets can be combined only into unions of residuals (they partition the leaves of each
   published row), so this rule is sound for every linear combination, not just one subtraction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pyarrow as pa

from publish._registry import Rollup
from publish.previous import Key, jst_day

LeafContributions = dict[str, tuple[str, float]]  # device -> (operator, weight)


@dataclass
class Suppression:
    """What the rules did: the published keys and the counts of each rule."""

    published: set[Key]
    cells_before: int
    suppressed_k: int = 0
    suppressed_dominance: int = 0
    suppressed_previous: int = 0
    suppressed_complementary: int = 0
    unverifiable: int = 0  # rows without contributions (cannot happen for a correct query; suppressed)
    reasons: dict[Key, str] = field(default_factory=dict)


class CellIndex:
    """Leaves and their contributions, the rows above them, and the k / dominance test of any leaf set."""

    def __init__(
        self,
        contributions: pa.Table,
        key_columns: Sequence[str],
        rollup: Rollup | None,
        k: int,
        dominance: float,
        device_dominance: float | None = None,
    ) -> None:
        self.key_columns = tuple(key_columns)
        self.rollup = rollup
        self.k = k
        self.dominance = dominance
        self.device_dominance = device_dominance
        self.leaves: dict[Key, LeafContributions] = defaultdict(dict)
        keys = [contributions.column(c).to_pylist() for c in key_columns]
        devices = contributions.column("device").to_pylist()
        operators = contributions.column("operator").to_pylist()
        weights = contributions.column("weight").to_pylist()
        for i, device in enumerate(devices):
            leaf = self.leaves[tuple(column[i] for column in keys)]
            _, before = leaf.get(device, (operators[i], 0.0))
            leaf[device] = (operators[i], before + float(weights[i] or 0.0))
        self.rollup_index = key_columns.index(rollup.column) if rollup is not None else -1

    def ancestors(self, key: Key) -> list[Key]:
        if self.rollup is None:
            return []
        i = self.rollup_index
        return [(*key[:i], value, *key[i + 1 :]) for value in self.rollup.chain(key[i])]

    def leaves_below(self, rows: set[Key]) -> dict[Key, set[Key]]:
        """For each row, the leaves it aggregates (a leaf row: itself)."""
        below: dict[Key, set[Key]] = {row: set() for row in rows}
        for leaf in self.leaves:
            for row in (leaf, *self.ancestors(leaf)):
                if row in below:
                    below[row].add(leaf)
        return below

    def failure(self, leaves: set[Key]) -> str | None:
        """``"k"``, ``"dominance"`` or None (passes) for the union of ``leaves``."""
        per_operator: dict[str, float] = defaultdict(float)
        per_device: dict[str, float] = defaultdict(float)
        operator_devices: dict[str, set[str]] = defaultdict(set)
        for leaf in leaves:
            for device, (operator, weight) in self.leaves.get(leaf, {}).items():
                per_device[device] += weight
                per_operator[operator] += weight
                operator_devices[operator].add(device)
        if len(per_device) < self.k:
            return "k"
        total = sum(per_operator.values())
        if total > 0:
            share = max(per_operator.values()) / total
        else:
            share = max(len(d) for d in operator_devices.values()) / len(per_device)
        if share > self.dominance:
            return "dominance"
        if self.device_dominance is not None and total > 0:
            return "dominance" if max(per_device.values()) / total > self.device_dominance else None
        return None

    def dominated(self, leaves: set[Key]) -> bool:
        """Whether one operator holds more than the dominance share of ``leaves`` (False when empty)."""
        per_operator: dict[str, float] = defaultdict(float)
        operator_devices: dict[str, set[str]] = defaultdict(set)
        for leaf in leaves:
            for device, (operator, weight) in self.leaves.get(leaf, {}).items():
                per_operator[operator] += weight
                operator_devices[operator].add(device)
        if not operator_devices:
            return False
        total = sum(per_operator.values())
        if total > 0:
            return max(per_operator.values()) / total > self.dominance
        devices = sum(len(d) for d in operator_devices.values())
        return max(len(d) for d in operator_devices.values()) / devices > self.dominance

    def devices(self, leaves: set[Key]) -> set[str]:
        return {d for leaf in leaves for d in self.leaves.get(leaf, {})}

    def residual_failure(self, leaves: set[Key], covered: set[Key]) -> str | None:
        """What subtraction reveals of the row over ``leaves`` minus the published rows covering
        ``covered``: the residual's values (k and dominance over the residual leaves), and its devices: the
        devices in no covered leaf (the total's device count minus the published ones') must be none or
        at least k.  None when it passes (an empty residual always does)."""
        residual = leaves - covered
        if not residual:
            return None
        failure = self.failure(residual)
        if failure is not None:
            return failure
        only_residual = len(self.devices(leaves) - self.devices(covered))
        return "k" if 0 < only_residual < self.k else None

    def size(self, leaves: set[Key]) -> tuple[float, int]:
        devices = {d for leaf in leaves for d in self.leaves.get(leaf, {})}
        weight = sum(w for leaf in leaves for _, w in self.leaves.get(leaf, {}).values())
        return weight, len(devices)


def suppress(
    cells: pa.Table,
    index: CellIndex,
    *,
    time_column: str,
    repeated_days: frozenset[date] = frozenset(),
) -> Suppression:
    """Apply the four rules to ``cells`` (one row per key); return what may be published."""
    by_key = _rows(cells, index.key_columns)
    result = Suppression(published=set(), cells_before=len(by_key))
    below = index.leaves_below(set(by_key))
    published: set[Key] = set()
    for key in sorted(by_key, key=_order):
        leaves = below[key]
        if jst_day(by_key[key][cells.column_names.index(time_column)]) in repeated_days:
            reason: str | None = "previous"
        else:
            reason = index.failure(leaves) if leaves else "unverifiable"
        if reason is None:
            published.add(key)
        else:
            result.reasons[key] = reason
    result.suppressed_k = sum(r == "k" for r in result.reasons.values())
    result.suppressed_dominance = sum(r == "dominance" for r in result.reasons.values())
    result.suppressed_previous = sum(r == "previous" for r in result.reasons.values())
    result.unverifiable = sum(r == "unverifiable" for r in result.reasons.values())
    if index.rollup is not None:
        result.suppressed_complementary = _complementary(index, by_key, below, published, result.reasons)
    result.published = published
    return result


def _complementary(
    index: CellIndex,
    by_key: dict[Key, tuple[Any, ...]],
    below: dict[Key, set[Key]],
    published: set[Key],
    reasons: dict[Key, str],
) -> int:
    """The residual rule, to a fixed point; returns how many rows it suppressed."""
    parent_of: dict[Key, list[Key]] = {}  # row -> its ancestors that are rows, nearest first
    for key in by_key:
        parent_of[key] = [a for a in index.ancestors(key) if a in by_key]
    strictly_below: dict[Key, list[Key]] = defaultdict(list)
    for key, ancestors in parent_of.items():
        for ancestor in ancestors:
            strictly_below[ancestor].append(key)
    parents = sorted(strictly_below, key=_order)
    count = 0
    changed = True
    while changed:
        changed = False
        for parent in parents:
            if parent not in published:
                continue
            covered_rows = [r for r in strictly_below[parent] if r in published]
            covered = set().union(*(below[r] for r in covered_rows)) if covered_rows else set()
            if not covered_rows or index.residual_failure(below[parent], covered) is None:
                continue
            # The published rows directly below `parent`: no published row between them and it.
            frontier = [
                r for r in covered_rows if not any(a in published for a in _between(parent_of[r], parent))
            ]
            victim = min(frontier, key=lambda r: (*index.size(below[r]), _order(r)))
            published.discard(victim)
            reasons[victim] = "complementary"
            count += 1
            changed = True
    return count


def _between(ancestors: list[Key], top: Key) -> list[Key]:
    """The ancestors of a row that lie strictly below ``top`` (``ancestors`` is nearest first)."""
    return ancestors[: ancestors.index(top)] if top in ancestors else ancestors


def _rows(cells: pa.Table, key_columns: Sequence[str]) -> dict[Key, tuple[Any, ...]]:
    columns = [cells.column(name).to_pylist() for name in cells.column_names]
    index = [cells.column_names.index(k) for k in key_columns]
    out: dict[Key, tuple[Any, ...]] = {}
    for row in zip(*columns, strict=True):
        key = tuple(row[i] for i in index)
        if key in out:
            raise ValueError(f"two candidate rows share the key {key!r}")
        out[key] = tuple(row)
    return out


def _order(key: Key) -> tuple[Any, ...]:
    """A total order on keys whose parts may be None."""
    return tuple((part is None, part if part is not None else 0) for part in key)


def published_mask(cells: pa.Table, key_columns: Sequence[str], published: set[Key]) -> pa.Array:
    keys = zip(*(cells.column(c).to_pylist() for c in key_columns), strict=True)
    return pa.array([tuple(k) in published for k in keys], pa.bool_())
