"""The dataset registry's types and tables, without loading any dataset (``publish.datasets`` does that).

Modules that define datasets import from here, so that importing one of them never imports the others.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from publish.errors import UnknownDataset
from publish.model import BuiltDataset, DatasetSpec
from store.lake import Lake
from store.releases import WITHDRAWN_DATASETS
from store.settings import Settings


@dataclass(frozen=True)
class BuildRequest:
    """Everything a builder needs: where to read, what to build, and the earlier releases to respect."""

    lake: Lake
    spec: DatasetSpec
    date_from: date  # JST, inclusive
    date_to: date  # JST, inclusive
    settings: Settings
    previous: tuple[Path, ...] = ()  # version folders of earlier releases of the same dataset
    at_versions: Mapping[str, int] | None = None  # read these Delta versions (a rebuild), else the latest
    received_until: datetime | None = None  # read only samples received by then (publish.closure)
    day_cuts: Mapping[date, datetime] | None = None  # days with a cut of their own (publish.release_log)


Builder = Callable[[BuildRequest], BuiltDataset]
GateCheck = Callable[[BuiltDataset, Settings], list[str]]


class Use(enum.Enum):
    """How an output column uses its lake columns (each use allows some publish rules: ``publish.rules``)."""

    AS_IS = "as_is"  # a dimension copied as it is
    TIME_BUCKET = "time_bucket"  # a time rounded down to the dataset's resolution
    SPACE_CELL = "space_cell"  # a position turned into a JIS mesh cell or a corridor zone
    STATISTIC = "statistic"  # a count, sum, mean, share or percentile over a cell
    TRAVEL = "travel"  # distance or time travelled, summed over a cell (from positions and times)
    COUNT_DISTINCT = "count_distinct"  # the number of distinct values in a cell
    COUNT = "count"  # a number of rows (no lake column)


@dataclass(frozen=True)
class Derivation:
    """Where one output column comes from: (use, ``table.column`` names) parts; ``+`` joins two."""

    parts: tuple[tuple[Use, tuple[str, ...]], ...]

    def __add__(self, other: Derivation) -> Derivation:
        return Derivation(self.parts + other.parts)


def derive(use: Use, *sources: str) -> Derivation:
    return Derivation(((use, sources),))


@dataclass(frozen=True)
class Rollup:
    """How rows nest: the row whose ``column`` holds ``parent(value)`` (other keys equal) contains this one.

    ``parent`` returns None for a row at the top.  A parent row's value is the aggregate of its descendant
    leaves (finest rows): a mesh cell of a coarser level, or a total over a dimension (``all``).
    """

    column: str
    parent: Callable[[Any], Any]

    def chain(self, value: Any) -> list[Any]:
        """``value``'s ancestors, nearest first."""
        out = []
        current = self.parent(value)
        while current is not None:
            out.append(current)
            current = self.parent(current)
        return out


@dataclass(frozen=True)
class DatasetEntry:
    spec: DatasetSpec
    builder: Builder
    aggregate: bool = False  # cells with k, dominance and complementary suppression (the gate checks them)
    key_columns: tuple[str, ...] = ()  # the columns that identify a row (a cell)
    time_column: str | None = None  # the time bucket or day of a row (JST day decides release overlap)
    rollup: Rollup | None = None
    derivations: Mapping[str, Derivation] = field(default_factory=dict)
    preflight: Callable[[Settings], None] | None = None  # raise a clear error before any work
    without_dp: str | None = None  # set: left out of releases under differential privacy, for this reason
    # set: no single device may hold more than this share of a row's weight (trips-od: one looping shuttle)
    device_dominance: float | None = None


DATASETS: dict[str, DatasetSpec] = {}
ENTRIES: dict[str, DatasetEntry] = {}
GATE_CHECKS: dict[str, list[GateCheck]] = {}


def register(
    spec: DatasetSpec,
    builder: Builder,
    *,
    preflight: Callable[[Settings], None] | None = None,
    **aggregate: Any,
) -> DatasetEntry:
    """Add a dataset.  ``aggregate`` holds the :class:`DatasetEntry` fields of an aggregate dataset."""
    if spec.id in WITHDRAWN_DATASETS:
        raise ValueError(f"dataset {spec.id!r} was withdrawn: its id is never reused")
    if spec.id in ENTRIES:
        raise ValueError(f"dataset {spec.id!r} is registered twice")
    entry = DatasetEntry(spec, builder, preflight=preflight, **aggregate)
    ENTRIES[spec.id] = entry
    DATASETS[spec.id] = spec
    return entry


def register_check(dataset_id: str, check: GateCheck) -> None:
    """Add a privacy-gate check for ``dataset_id``: it returns one line per failure (empty: pass)."""
    GATE_CHECKS.setdefault(dataset_id, []).append(check)


def dataset_entry(dataset_id: str) -> DatasetEntry:
    try:
        return ENTRIES[dataset_id]
    except KeyError:
        if dataset_id in WITHDRAWN_DATASETS:
            raise UnknownDataset(
                f"{dataset_id} was withdrawn and is not built any more: {WITHDRAWN_DATASETS[dataset_id]}"
            ) from None
        raise UnknownDataset(f"Unknown dataset {dataset_id!r}: choose one of {', '.join(ENTRIES)}") from None


def differential_privacy_on(settings: Settings) -> bool:
    """Whether releases are made under differential privacy (``dp_epsilon`` set, as in ``publish.noise``)."""
    return settings.dp_epsilon is not None


def left_out_under_dp() -> dict[str, str]:
    """The datasets left out of releases under differential privacy, each with the reason."""
    return {i: e.without_dp for i, e in ENTRIES.items() if e.without_dp is not None}


def default_ids(settings: Settings | None = None) -> list[str]:
    """The datasets ``--all`` publishes: every one that is not opt-in, in registration order; with
    ``settings`` under differential privacy, not those left out of it (:func:`left_out_under_dp`)."""
    skip = left_out_under_dp() if settings is not None and differential_privacy_on(settings) else {}
    return [i for i, e in ENTRIES.items() if not e.spec.opt_in and i not in skip]
