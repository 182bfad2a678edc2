"""What the parts of publishing hand each other: a dataset's description and a built dataset.

A dataset is built (aggregated, anonymized: ``publish.datasets``, ``publish.anonymize``,
``publish.trips_od``), checked (``publish.gate``), written as files with metadata
(``publish.export``) and released as an immutable version (``publish.release``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class OutputColumn:
    """One column of a published file, documented in Japanese and English."""

    name: str
    type: pa.DataType
    unit: str
    title_ja: str
    title_en: str
    description_ja: str
    description_en: str
    kind: str = "measure"  # "dimension" (a group-by key: time bucket, mesh, zone, kind...) or "measure"


@dataclass(frozen=True)
class DatasetSpec:
    """A public dataset: identity, documentation and output columns."""

    id: str
    title_ja: str
    title_en: str
    description_ja: str
    description_en: str
    keywords_ja: tuple[str, ...]
    keywords_en: tuple[str, ...]
    columns: tuple[OutputColumn, ...]
    spatial: bool  # cells are JIS mesh codes (GeoJSON of the cells is written) or zones
    time_resolution: str  # e.g. "PT1H", "PT15M", "P1D" (ISO 8601 duration)
    mesh_level: int | None = None  # JIS X 0410 level of the mesh column, when spatial
    opt_in: bool = False  # built only when asked for explicitly (not by --all)

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type) for c in self.columns])


@dataclass
class PrivacyReport:
    """The privacy parameters actually applied, for the machine-readable metadata."""

    k: int
    dominance_share: float
    time_coarsening: str
    space_coarsening: str
    cells_before: int = 0
    cells_published: int = 0
    cells_suppressed_k: int = 0
    cells_suppressed_dominance: int = 0
    cells_suppressed_complementary: int = 0
    epsilon: float | None = None
    delta: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "extra"}
        out.update(self.extra)
        return out


@dataclass
class BuiltDataset:
    """A dataset ready to be checked and written: the published rows and everything about them."""

    spec: DatasetSpec
    table: pa.Table  # exactly the rows and columns that will be published (spec.columns order)
    privacy: PrivacyReport
    date_from: date  # JST dates, inclusive
    date_to: date
    source_versions: dict[str, int]  # Delta table version read, per lake table
    parameters: dict[str, Any]  # everything that decides the output (for provenance and rebuilds)
    bbox: tuple[float, float, float, float] | None = None  # west, south, east, north (WGS84)
    internal: dict[str, Any] = field(default_factory=dict)  # what the gate needs but is never written
