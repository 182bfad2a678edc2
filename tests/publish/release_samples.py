"""Small built datasets made by hand, for the release-file tests (no lake, no anonymizer needed).

``mesh_dataset``: spatial (JIS 250 m mesh x hour), with hours whose JST date is the next UTC day, a
missing median and a NaN-free float column.  ``zone_dataset``: per zone x day x kind, Japanese text and
a value holding a comma and a quote (CSV quoting).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa

from publish.model import BuiltDataset, DatasetSpec, OutputColumn, PrivacyReport
from store.geo import jis_mesh
from store.settings import Settings

#: SEMIC's DCAT-AP 3.0.1 SHACL shapes, shipped with the tests (source and licence: data/README.md).
SHAPES = Path(__file__).resolve().parent / "data" / "dcat-ap-3.0.1-shapes.ttl"

HANEDA_POINTS = [(35.549, 139.785), (35.551, 139.789), (35.544, 139.769), (35.547, 139.751)]
MESH_CODES = [int(jis_mesh(lat, lon, 5)) for lat, lon in HANEDA_POINTS]


def _col(name: str, type_: pa.DataType, unit: str, kind: str = "measure") -> OutputColumn:
    return OutputColumn(
        name=name,
        type=type_,
        unit=unit,
        title_ja=f"{name} の項目名",
        title_en=f"{name.replace('_', ' ').capitalize()}",
        description_ja=f"{name} の説明 | 縦棒を含む",
        description_en=f"What {name} holds.",
        kind=kind,
    )


MESH_SPEC = DatasetSpec(
    id="network-quality-mesh",
    title_ja="通信品質 (250m メッシュ・1時間)",
    title_en="Network quality per 250 m mesh and hour",
    description_ja="羽田・蒲田コリドーの 5G 通信品質。",
    description_en="5G network quality in the Haneda-Kamata corridor.",
    keywords_ja=("5G", "通信品質", "地域メッシュ"),
    keywords_en=("5G", "network quality", "JIS mesh"),
    columns=(
        _col("hour_start", pa.timestamp("us", tz="UTC"), "datetime", "dimension"),
        _col("mesh_code", pa.int64(), "JIS X 0410 level 5 code", "dimension"),
        _col("samples", pa.int64(), "count"),
        _col("devices", pa.int64(), "count"),
        _col("rsrp_median_dbm", pa.float64(), "dBm"),
        _col("nr_share", pa.float64(), "ratio 0-1"),
    ),
    spatial=True,
    time_resolution="PT1H",
    mesh_level=5,
)

ZONE_SPEC = DatasetSpec(
    id="safety-events",
    title_ja="安全関連イベント (ゾーン・日)",
    title_en="Safety events per zone and day",
    description_ja="ゾーン・日・種類ごとのイベント件数。",
    description_en="Event counts per zone, day and kind.",
    keywords_ja=("自動運転", "安全"),
    keywords_en=("autonomous driving", "safety"),
    columns=(
        _col("day", pa.date32(), "date (JST)", "dimension"),
        _col("zone", pa.string(), "zone id", "dimension"),
        _col("kind", pa.string(), "event kind", "dimension"),
        _col("events", pa.int64(), "count"),
        _col("rate_per_100km", pa.float64(), "events per 100 km"),
    ),
    spatial=False,
    time_resolution="P1D",
)


def privacy_report() -> PrivacyReport:
    return PrivacyReport(
        k=10,
        dominance_share=0.8,
        time_coarsening="PT1H",
        space_coarsening="JIS mesh level 5 (250 m)",
        cells_before=12,
        cells_published=8,
        cells_suppressed_k=3,
        cells_suppressed_dominance=1,
        cells_suppressed_complementary=0,
        epsilon=1.0,
        delta=1e-6,
        extra={"contribution_bound": 5},
    )


def mesh_table() -> pa.Table:
    hours = [
        datetime(2024, 6, 1, 14, tzinfo=UTC),  # 23:00 JST on 1 June
        datetime(2024, 6, 1, 15, tzinfo=UTC),  # 00:00 JST on 2 June
        datetime(2024, 6, 1, 0, tzinfo=UTC),
    ]
    rows: list[dict[str, object]] = []
    for h_index, hour in enumerate(hours):
        for m_index, code in enumerate(MESH_CODES):
            rows.append(
                {
                    "hour_start": hour,
                    "mesh_code": code,
                    "samples": 100 + 7 * h_index + m_index,
                    "devices": 10 + m_index,
                    "rsrp_median_dbm": None
                    if (h_index, m_index) == (1, 2)
                    else -95.5 + h_index - m_index / 3,
                    "nr_share": (m_index + 1) / 7,
                }
            )
    rows.reverse()  # not in publishing order: the writer sorts
    return pa.Table.from_pylist(rows, schema=MESH_SPEC.schema)


def zone_table() -> pa.Table:
    rows = [
        {
            "day": date(2024, 6, 2),
            "zone": "haneda_t1",
            "kind": "disengagement",
            "events": 12,
            "rate_per_100km": 1.25,
        },
        {
            "day": date(2024, 6, 1),
            "zone": '羽田, "T3"',
            "kind": "near_miss",
            "events": 10,
            "rate_per_100km": None,
        },
        {
            "day": date(2024, 6, 1),
            "zone": "haneda_t1",
            "kind": "disengagement",
            "events": 11,
            "rate_per_100km": 0.5,
        },
    ]
    return pa.Table.from_pylist(rows, schema=ZONE_SPEC.schema)


def built_dataset(spec: DatasetSpec, rows: pa.Table, **changes: object) -> BuiltDataset:
    built = BuiltDataset(
        spec=spec,
        table=rows,
        privacy=privacy_report(),
        date_from=date(2024, 6, 1),
        date_to=date(2024, 6, 2),
        source_versions={"network": 7, "state": 12},
        parameters={"k": 10, "dominance": 0.8, "dataset": spec.id},
        bbox=(139.70, 35.53, 139.80, 35.57),
    )
    for name, value in changes.items():
        setattr(built, name, value)
    return built


def mesh_built(**changes: object) -> BuiltDataset:
    return built_dataset(MESH_SPEC, mesh_table(), **changes)


def zone_built(**changes: object) -> BuiltDataset:
    return built_dataset(ZONE_SPEC, zone_table(), **changes)


def settings(tmp_path: Path) -> Settings:
    return Settings(lake=tmp_path / "lake", releases=tmp_path / "releases")
