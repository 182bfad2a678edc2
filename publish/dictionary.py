"""The data dictionary of a release, in Japanese and English: one row per published column.

Written twice from the same rows: ``data_dictionary.csv`` (for spreadsheets; same encoding and line
ends as the data CSV) and ``data_dictionary.md`` (for people reading the release on the web).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pyarrow as pa

from publish.files import CSV_EOL, UTF8_BOM
from publish.model import BuiltDataset, OutputColumn
from publish.publisher import LICENSE_NOTE_EN, LICENSE_NOTE_JA, OTA_CITY

DICTIONARY_FIELDS = (
    "name",
    "type",
    "unit",
    "kind",
    "title_ja",
    "title_en",
    "description_ja",
    "description_en",
)


def table_schema_type(data_type: pa.DataType) -> str:
    """The Frictionless Table Schema type of an Arrow type (how the CSV cell is to be read)."""
    if pa.types.is_boolean(data_type):
        return "boolean"
    if pa.types.is_integer(data_type):
        return "integer"
    if pa.types.is_floating(data_type) or pa.types.is_decimal(data_type):
        return "number"
    if pa.types.is_timestamp(data_type):
        return "datetime"
    if pa.types.is_date(data_type):
        return "date"
    if pa.types.is_time(data_type):
        return "time"
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return "string"
    return "any"


def dictionary_rows(columns: tuple[OutputColumn, ...]) -> list[dict[str, str]]:
    return [
        {
            "name": c.name,
            "type": table_schema_type(c.type),
            "unit": c.unit,
            "kind": c.kind,
            "title_ja": c.title_ja,
            "title_en": c.title_en,
            "description_ja": c.description_ja,
            "description_en": c.description_en,
        }
        for c in columns
    ]


def write_dictionary_csv(built: BuiltDataset, path: Path, *, bom: bool) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=DICTIONARY_FIELDS, lineterminator=CSV_EOL)
    writer.writeheader()
    writer.writerows(dictionary_rows(built.spec.columns))
    path.write_bytes((UTF8_BOM if bom else b"") + buffer.getvalue().encode("utf-8"))


def _cell(text: str) -> str:
    """Markdown table cell text: pipes escaped, line breaks as <br>."""
    return text.replace("|", "\\|").replace("\r\n", "<br>").replace("\n", "<br>") or "-"


def dictionary_markdown(built: BuiltDataset, version: str) -> str:
    spec = built.spec
    lines = [
        f"# {spec.title_ja} / {spec.title_en}",
        "",
        f"- データセット ID / dataset id: `{spec.id}`",
        f"- 版 / version: `{version}`",
        f"- 期間 (JST) / period (JST): {built.date_from.isoformat()} – {built.date_to.isoformat()}",
        f"- 時間分解能 / time resolution: `{spec.time_resolution}`",
    ]
    if spec.spatial and spec.mesh_level is not None:
        lines.append(f"- 地域メッシュ / JIS X 0410 mesh level: {spec.mesh_level}")
    lines += [
        f"- 公開者 / publisher: {OTA_CITY.name_ja} ({OTA_CITY.name_en}), "
        f"地方公共団体コード / local government code {OTA_CITY.local_government_code}",
        f"- {LICENSE_NOTE_JA}",
        f"- {LICENSE_NOTE_EN}",
        "",
        spec.description_ja,
        "",
        spec.description_en,
        "",
        "## 項目 / Columns",
        "",
        "| 列 / column | 型 / type | 単位 / unit | 項目名 | title | 説明 | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in dictionary_rows(spec.columns):
        cells = [
            f"`{row['name']}`",
            row["type"],
            row["unit"],
            row["title_ja"],
            row["title_en"],
            row["description_ja"],
            row["description_en"],
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += [
        "",
        "CSV の時刻は日本標準時 (JST, +09:00)、Parquet の時刻は UTC (マイクロ秒) です。",
        "CSV times are Japan Standard Time (JST, +09:00); Parquet times are UTC (microseconds).",
        "",
    ]
    return "\n".join(lines)


def write_dictionary_markdown(built: BuiltDataset, version: str, path: Path) -> None:
    path.write_text(dictionary_markdown(built, version), encoding="utf-8")
