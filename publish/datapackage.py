"""``datapackage.json``: the release as a Frictionless Data Package (v2), valid for ``frictionless``.

Resources: the CSV as a tabular resource with its Table Schema (types, ja/en titles and descriptions,
units, primary key when the dimension columns are a key); Parquet, GeoJSON, the data dictionary and
``privacy.json`` as file resources.  Every resource carries ``bytes`` and ``hash`` (sha256), which
``frictionless validate`` checks.  Custom properties (allowed by the spec):

* ``privacy``: the privacy parameters actually applied (``PrivacyReport.as_dict()``);
* ``provenance``: the build parameters (the Delta table versions read are kept by the hub, not published);
* ``temporal`` / ``spatial``: JST date range, time resolution, bbox (WGS84) and JIS mesh level;
* ``title_ja`` / ``description_ja`` at package and field level, ``unit`` at field level.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa

from publish.dictionary import table_schema_type
from publish.manifest import FileEntry, json_value, privacy_parameters
from publish.model import BuiltDataset
from publish.publisher import COMPATIBLE_LICENSES, LICENSE, OTA_CITY

DATAPACKAGE_NAME = "datapackage.json"
PACKAGE_PROFILE = "https://datapackage.org/profiles/2.0/datapackage.json"
RESOURCE_PROFILE = "https://datapackage.org/profiles/2.0/dataresource.json"
FORMATS = {".parquet": "parquet", ".csv": "csv", ".geojson": "geojson", ".json": "json", ".md": "md"}


def primary_key(built: BuiltDataset, table: pa.Table) -> list[str]:
    """The dimension columns, when they hold no null and identify every row; else no key."""
    keys = [c.name for c in built.spec.columns if c.kind == "dimension"]
    if not keys or table.num_rows == 0:
        return []
    if any(table.column(k).null_count for k in keys):
        return []
    distinct = table.group_by(keys).aggregate([]).num_rows
    return keys if distinct == table.num_rows else []


def table_schema(built: BuiltDataset, table: pa.Table) -> dict[str, Any]:
    fields = []
    for column in built.spec.columns:
        field: dict[str, Any] = {
            "name": column.name,
            "type": table_schema_type(table.schema.field(column.name).type),
            "title": column.title_en,
            "description": column.description_en,
            "title_ja": column.title_ja,
            "description_ja": column.description_ja,
            "unit": column.unit,
        }
        if column.kind == "dimension" and table.column(column.name).null_count == 0:
            field["constraints"] = {"required": True}
        fields.append(field)
    schema: dict[str, Any] = {"fields": fields, "missingValues": [""]}
    key = primary_key(built, table)
    if key:
        schema["primaryKey"] = key
    return schema


def _resource(entry: FileEntry, name: str, title: str, description: str) -> dict[str, Any]:
    suffix = "." + entry.name.rsplit(".", 1)[-1]
    return {
        "name": name,
        "path": entry.name,
        "type": "file",
        "title": title,
        "description": description,
        "format": FORMATS.get(suffix, suffix.lstrip(".")),
        "mediatype": entry.media_type,
        "encoding": "utf-8",
        "bytes": entry.bytes,
        "hash": f"sha256:{entry.sha256}",
    }


def datapackage(
    built: BuiltDataset,
    table: pa.Table,
    version: str,
    files: dict[str, FileEntry],
    *,
    csv_name: str,
    descriptions: dict[str, tuple[str, str]],
    built_at: datetime | None = None,
) -> dict[str, Any]:
    """The descriptor.  ``files`` holds the release files to list (by name) and ``descriptions`` their
    (title, description) in English; the CSV (``csv_name``) becomes the tabular resource."""
    spec = built.spec
    resources = []
    for name, entry in files.items():
        title, description = descriptions[name]
        resource_name = name.replace(".", "-").replace("_", "-").lower()
        resource = _resource(entry, resource_name, title, description)
        if name == csv_name:
            resource["type"] = "table"
            resource["dialect"] = {"header": True, "delimiter": ",", "lineTerminator": "\r\n"}
            resource["schema"] = table_schema(built, table)
        elif name.endswith(".parquet"):
            del resource["encoding"]
        resources.append(resource)
    descriptor: dict[str, Any] = {
        "$schema": PACKAGE_PROFILE,
        "name": spec.id,
        "id": f"{spec.id}/{version}",
        "title": spec.title_en,
        "title_ja": spec.title_ja,
        "description": spec.description_en,
        "description_ja": spec.description_ja,
        "version": version,
        "keywords": [*spec.keywords_ja, *spec.keywords_en],
        "licenses": [
            {"name": lic.id, "path": lic.url, "title": lic.title} for lic in (LICENSE, *COMPATIBLE_LICENSES)
        ],
        "contributors": [
            {
                "title": f"{OTA_CITY.name_ja} ({OTA_CITY.name_en})",
                "path": OTA_CITY.homepage,
                "roles": ["publisher"],
                "local_government_code": OTA_CITY.local_government_code,
            }
        ],
        "homepage": OTA_CITY.homepage,
    }
    if built_at is not None:
        descriptor["created"] = built_at.isoformat()
    descriptor["temporal"] = {
        "start": built.date_from.isoformat(),
        "end": built.date_to.isoformat(),
        "timezone": "Asia/Tokyo",
        "resolution": spec.time_resolution,
    }
    spatial: dict[str, Any] = {"crs": "EPSG:4326"}
    if built.bbox is not None:
        spatial["bbox"] = list(built.bbox)
    if spec.spatial and spec.mesh_level is not None:
        spatial["jis_mesh_level"] = spec.mesh_level
    descriptor["spatial"] = spatial
    descriptor["privacy"] = privacy_parameters(built)
    descriptor["provenance"] = {"parameters": json_value(built.parameters)}  # Delta versions: kept private
    descriptor["resources"] = resources
    return descriptor
