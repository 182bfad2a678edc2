"""Writing a release: every file of one built dataset into one folder, the manifest last.

The caller (``publish.release``) makes ``folder`` as a temporary folder next to its final place and
renames it atomically afterwards; :func:`write_release` only fills it.  The files, in writing order:

==========================  ===============================================================================
``{id}.parquet``            the rows: zstd, microsecond UTC timestamps
``{id}.csv``                the same rows: UTF-8 (BOM with ``csv_bom``), CRLF, JST times
``{id}.geojson``            the JIS mesh cells of the rows (spatial datasets only)
``data_dictionary.csv``     column, type, unit, kind, ja/en title and description
``data_dictionary.md``      the same, with the dataset's description, period, license, publisher
``privacy.json``            the privacy parameters applied (``PrivacyReport.as_dict()``)
``datapackage.json``        Frictionless Data Package v2 (hash and size of each file above)
``dcat.jsonld``             DCAT-AP 3.0 JSON-LD: dcat:Dataset with a dcat:Distribution per file above
``ckan_package.json``       CKAN ``package_create`` body (resources: every file above)
``manifest.json``           sha256 and size of every other file
==========================  ===============================================================================

Reproducible: the same ``BuiltDataset`` and arguments give byte-identical files, metadata included.
Nothing reads the clock: the only time in the metadata is ``built_at`` (DCAT ``dct:issued``/``modified``,
datapackage ``created``), written only when the caller passes it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from publish.ckan import CKAN_NAME, ckan_package
from publish.datapackage import DATAPACKAGE_NAME, datapackage
from publish.dcat import DCAT_NAME, dcat_document
from publish.dictionary import write_dictionary_csv, write_dictionary_markdown
from publish.errors import PublishError
from publish.files import mesh_column, published_table, write_csv, write_mesh_geojson, write_parquet
from publish.manifest import (
    MANIFEST_NAME,
    PRIVACY_NAME,
    FileEntry,
    describe_file,
    dump_json,
    write_manifest,
    write_privacy,
)
from publish.model import BuiltDataset
from store.settings import Settings

DICTIONARY_CSV = "data_dictionary.csv"
DICTIONARY_MD = "data_dictionary.md"


def file_titles(dataset_id: str) -> dict[str, tuple[str, str, str]]:
    """(title ja, title en, description en) of each file a release can hold."""
    return {
        f"{dataset_id}.parquet": ("データ (Parquet)", "Data (Parquet)", "The rows; timestamps in UTC."),
        f"{dataset_id}.csv": (
            "データ (CSV)",
            "Data (CSV)",
            "The same rows as the Parquet file; times in JST.",
        ),
        f"{dataset_id}.geojson": (
            "メッシュ (GeoJSON)",
            "Mesh cells (GeoJSON)",
            "The JIS X 0410 mesh cells of the rows, as polygons (WGS84).",
        ),
        DICTIONARY_CSV: (
            "データ辞書 (CSV)",
            "Data dictionary (CSV)",
            "Every column: type, unit, ja/en titles.",
        ),
        DICTIONARY_MD: (
            "データ辞書",
            "Data dictionary",
            "The dataset and its columns, in Japanese and English.",
        ),
        PRIVACY_NAME: ("プライバシー保護の設定", "Privacy parameters", "The privacy protection applied."),
        DATAPACKAGE_NAME: ("データパッケージ", "Data Package", "Frictionless Data Package descriptor."),
        DCAT_NAME: ("DCAT メタデータ", "DCAT metadata", "DCAT-AP 3.0 description as JSON-LD."),
    }


def write_release(
    built: BuiltDataset,
    folder: Path,
    settings: Settings,
    *,
    csv_bom: bool = False,
    version: str,
    base_url: str | None = None,
    built_at: datetime | None = None,
) -> list[Path]:
    """Write every file of the release of ``built`` into ``folder`` (which must exist and be empty).

    Returns the paths written, ``manifest.json`` last.  ``base_url`` is the public root of the HTTP
    service (download URLs in DCAT and CKAN metadata); ``built_at`` (timezone-aware) is written as the
    release time, and nothing is when it is left out.
    """
    if not folder.is_dir():
        raise ValueError(f"Release folder {folder} does not exist")
    if any(folder.iterdir()):
        raise ValueError(f"Release folder {folder} is not empty")
    if built_at is not None and built_at.tzinfo is None:
        raise ValueError("built_at must be timezone-aware")
    spec = built.spec
    table = published_table(built)
    titles = file_titles(spec.id)
    written: list[Path] = []

    def write(name: str, writer: Callable[[Path], None]) -> Path:
        path = folder / name
        writer(path)
        written.append(path)
        return path

    csv_name = f"{spec.id}.csv"
    write(f"{spec.id}.parquet", lambda p: write_parquet(table, p))
    write(csv_name, lambda p: write_csv(table, p, bom=csv_bom))
    if spec.spatial:
        write(f"{spec.id}.geojson", lambda p: write_mesh_geojson(table, mesh_column(spec), p))
    write(DICTIONARY_CSV, lambda p: write_dictionary_csv(built, p, bom=csv_bom))
    write(DICTIONARY_MD, lambda p: write_dictionary_markdown(built, version, p))
    write(PRIVACY_NAME, lambda p: write_privacy(built, version, p))

    entries: dict[str, FileEntry] = {p.name: describe_file(p) for p in written}
    package = datapackage(
        built,
        table,
        version,
        entries,
        csv_name=csv_name,
        descriptions={name: (titles[name][1], titles[name][2]) for name in entries},
        built_at=built_at,
    )
    entries[DATAPACKAGE_NAME] = describe_file(
        write(DATAPACKAGE_NAME, lambda p: _write_text(p, dump_json(package)))
    )
    dcat = dcat_document(
        built,
        version,
        entries,
        {name: titles[name][:2] for name in entries},
        base_url=base_url,
        built_at=built_at,
        page=DICTIONARY_MD,
    )
    entries[DCAT_NAME] = describe_file(write(DCAT_NAME, lambda p: _write_text(p, dump_json(dcat))))
    ckan = ckan_package(
        built, version, entries, {name: titles[name][:2] for name in entries}, base_url=base_url
    )
    write(CKAN_NAME, lambda p: _write_text(p, dump_json(ckan)))
    _refuse_secrets(settings, written)
    write_manifest(folder, spec.id, version)
    written.append(folder / MANIFEST_NAME)
    return written


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _refuse_secrets(settings: Settings, paths: list[Path]) -> None:
    """Fail when a secret setting's value appears in any file written (e.g. a secret that slipped into
    ``built.parameters``): a release never carries an API token or a password."""
    secrets = [
        value.encode("utf-8")
        for value in (settings.ckan_api_key, settings.mqtt_password)
        if value and len(value) >= 8
    ]
    for path in paths:
        content = path.read_bytes()
        for secret in secrets:
            if secret in content:
                raise PublishError(f"Release file {path.name} would contain the value of a secret setting")
