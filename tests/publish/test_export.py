"""The files of a release: what is written, that the metadata validates, and that it is reproducible."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from frictionless import Package, validate
from release_samples import MESH_CODES, mesh_built, mesh_table, settings, zone_built

from publish.errors import PublishError
from publish.export import write_release
from publish.model import BuiltDataset
from store.geo import mesh_bounds

MESH_FILES = [
    "network-quality-mesh.parquet",
    "network-quality-mesh.csv",
    "network-quality-mesh.geojson",
    "data_dictionary.csv",
    "data_dictionary.md",
    "privacy.json",
    "datapackage.json",
    "dcat.jsonld",
    "ckan_package.json",
    "manifest.json",
]


def release(
    tmp_path: Path,
    built: BuiltDataset,
    name: str = "release",
    *,
    csv_bom: bool = False,
    built_at: datetime | None = None,
) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    write_release(built, folder, settings(tmp_path), version="2024-06-02", csv_bom=csv_bom, built_at=built_at)
    return folder


def test_a_spatial_release_holds_every_file_manifest_last(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    folder.mkdir()
    written = write_release(mesh_built(), folder, settings(tmp_path), version="v1")
    assert [p.name for p in written] == MESH_FILES
    assert sorted(p.name for p in folder.iterdir()) == sorted(MESH_FILES)


def test_a_zone_release_has_no_geojson(tmp_path: Path) -> None:
    folder = release(tmp_path, zone_built())
    names = sorted(p.name for p in folder.iterdir())
    assert "safety-events.csv" in names and "safety-events.parquet" in names
    assert not [n for n in names if n.endswith(".geojson")]


@pytest.mark.parametrize("csv_bom", [False, True])
@pytest.mark.parametrize("make", [mesh_built, zone_built], ids=["mesh", "zone"])
def test_datapackage_validates_with_frictionless(
    tmp_path: Path, make: Callable[[], BuiltDataset], csv_bom: bool
) -> None:
    folder = release(tmp_path, make(), csv_bom=csv_bom)
    report = validate(folder / "datapackage.json")
    assert report.valid, report.to_summary()
    descriptor = json.loads((folder / "datapackage.json").read_text(encoding="utf-8"))
    listed = {r["path"] for r in descriptor["resources"]}
    assert listed == {p.name for p in folder.iterdir()} - {
        "datapackage.json",
        "dcat.jsonld",
        "ckan_package.json",
        "manifest.json",
    }


def test_frictionless_catches_a_changed_file(tmp_path: Path) -> None:
    """The hashes in datapackage.json are checked: the validation above is not vacuous."""
    folder = release(tmp_path, zone_built())
    with (folder / "safety-events.csv").open("ab") as f:
        f.write(b"2024-06-03,x,y,1,\r\n")
    assert not validate(folder / "datapackage.json").valid


def test_csv_table_schema_types_units_and_key(tmp_path: Path) -> None:
    folder = release(tmp_path, mesh_built())
    package = Package(folder / "datapackage.json")
    resource = package.get_resource("network-quality-mesh-csv")
    fields = {f.name: f for f in resource.schema.fields}
    assert fields["hour_start"].type == "datetime"
    assert fields["mesh_code"].type == "integer"
    assert fields["rsrp_median_dbm"].type == "number"
    assert fields["rsrp_median_dbm"].to_descriptor()["unit"] == "dBm"
    assert resource.schema.primary_key == ["hour_start", "mesh_code"]
    rows = resource.read_rows()  # type: ignore[attr-defined]
    assert len(rows) == mesh_table().num_rows
    assert rows[0]["hour_start"] == datetime(2024, 6, 1, 0, tzinfo=UTC)  # read back from 09:00+09:00 text


def _parquet_rows(folder: Path, name: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = pq.read_table(folder / name).to_pylist()
    return rows


def _csv_rows(folder: Path, name: str, types: dict[str, pa.DataType]) -> list[dict[str, object]]:
    text = (folder / name).read_bytes().decode("utf-8-sig")
    rows = []
    for raw in csv.DictReader(io.StringIO(text, newline="")):
        row: dict[str, object] = {}
        for key, value in raw.items():
            data_type = types[key]
            if value == "":
                row[key] = None
            elif pa.types.is_timestamp(data_type):
                local = datetime.fromisoformat(value)
                assert local.utcoffset() == timedelta(hours=9), f"{key} {value!r} is not JST"
                row[key] = local.astimezone(UTC)
            elif pa.types.is_date(data_type):
                row[key] = date.fromisoformat(value)
            elif pa.types.is_integer(data_type):
                row[key] = int(value)
            elif pa.types.is_floating(data_type):
                row[key] = float(value)
            else:
                row[key] = value
        rows.append(row)
    return rows


@pytest.mark.parametrize("csv_bom", [False, True])
@pytest.mark.parametrize("make", [mesh_built, zone_built], ids=["mesh", "zone"])
def test_parquet_and_csv_hold_the_same_rows(
    tmp_path: Path, make: Callable[[], BuiltDataset], csv_bom: bool
) -> None:
    built = make()
    folder = release(tmp_path, built, csv_bom=csv_bom)
    dataset_id = built.spec.id
    types = {c.name: c.type for c in built.spec.columns}
    parquet_rows = _parquet_rows(folder, f"{dataset_id}.parquet")
    csv_rows = _csv_rows(folder, f"{dataset_id}.csv", types)
    assert csv_rows == parquet_rows
    assert len(parquet_rows) == built.table.num_rows
    # ... and they are the rows handed in, in the writer's order
    expected = sorted(built.table.to_pylist(), key=lambda r: json.dumps(r, default=str, sort_keys=True))
    got = sorted(parquet_rows, key=lambda r: json.dumps(r, default=str, sort_keys=True))
    assert got == expected


def test_parquet_is_zstd_with_microsecond_utc_timestamps(tmp_path: Path) -> None:
    folder = release(tmp_path, mesh_built())
    path = folder / "network-quality-mesh.parquet"
    assert pq.read_schema(path).field("hour_start").type == pa.timestamp("us", tz="UTC")
    metadata = pq.ParquetFile(path).metadata
    column = metadata.row_group(0).column(0)
    assert column.compression == "ZSTD"
    assert "isAdjustedToUTC=true" in str(metadata.schema.column(0).logical_type)


def test_nanosecond_and_naive_input_becomes_microsecond_utc(tmp_path: Path) -> None:
    table = mesh_table()
    naive_ns = table.column("hour_start").cast(pa.timestamp("ns", tz="UTC")).cast(pa.timestamp("ns"))
    built = mesh_built(table=table.set_column(0, "hour_start", naive_ns))
    folder = release(tmp_path, built)
    published = pq.read_table(folder / "network-quality-mesh.parquet")
    assert published.schema.field("hour_start").type == pa.timestamp("us", tz="UTC")
    assert sorted(published.column("hour_start").to_pylist()) == sorted(
        table.column("hour_start").to_pylist()
    )


def test_manifest_lists_exactly_the_files_with_sha256_and_size(tmp_path: Path) -> None:
    folder = release(tmp_path, mesh_built())
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    listed = {item["path"]: item for item in manifest["files"]}
    assert set(listed) == {p.name for p in folder.iterdir()} - {"manifest.json"}
    for name, item in listed.items():
        content = (folder / name).read_bytes()
        assert item["bytes"] == len(content), name
        assert item["sha256"] == hashlib.sha256(content).hexdigest(), name
    assert manifest["dataset"] == "network-quality-mesh" and manifest["version"] == "2024-06-02"


def test_writing_twice_gives_identical_files(tmp_path: Path) -> None:
    first = release(tmp_path, mesh_built(), "first")
    shuffled = mesh_table().take([5, 0, 11, 3, 7, 1, 10, 2, 9, 4, 8, 6])  # same rows, another order
    second = release(tmp_path, mesh_built(table=shuffled), "second")
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_built_at_is_the_only_time_written(tmp_path: Path) -> None:
    plain = release(tmp_path, zone_built(), "plain")
    assert "created" not in json.loads((plain / "datapackage.json").read_text(encoding="utf-8"))
    built_at = datetime(2024, 6, 3, 10, 30, tzinfo=UTC)
    stamped = release(tmp_path, zone_built(), "stamped", built_at=built_at)
    assert (
        json.loads((stamped / "datapackage.json").read_text(encoding="utf-8"))["created"]
        == built_at.isoformat()
    )
    for name in ("safety-events.parquet", "safety-events.csv", "data_dictionary.csv", "privacy.json"):
        assert (plain / name).read_bytes() == (stamped / name).read_bytes(), name


def test_csv_bom_and_line_ends(tmp_path: Path) -> None:
    with_bom = release(tmp_path, zone_built(), "bom", csv_bom=True)
    without = release(tmp_path, zone_built(), "plain")
    for name in ("safety-events.csv", "data_dictionary.csv"):
        data = (with_bom / name).read_bytes()
        assert data.startswith(b"\xef\xbb\xbf"), name
        assert data[3:] == (without / name).read_bytes(), name
        assert data.count(b"\n") == data.count(b"\r\n") > 1, "every line ends with CRLF"
    plain = (without / "safety-events.csv").read_bytes()
    assert plain.startswith(b"day,zone,kind,events,rate_per_100km\r\n")
    assert '"羽田, ""T3"""'.encode() in plain  # UTF-8, RFC 4180 quoting


def test_geojson_cells_match_the_mesh_codes(tmp_path: Path) -> None:
    folder = release(tmp_path, mesh_built())
    collection = json.loads((folder / "network-quality-mesh.geojson").read_text(encoding="utf-8"))
    assert collection["type"] == "FeatureCollection"
    codes = [f["properties"]["mesh_code"] for f in collection["features"]]
    assert codes == sorted(set(MESH_CODES)) and len(set(MESH_CODES)) == len(MESH_CODES)
    for feature in collection["features"]:
        code = feature["properties"]["mesh_code"]
        south, west, north, east = mesh_bounds(code)
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == [west, south] and ring[2] == [east, north]
        assert feature["properties"]["level"] == 5
        assert feature["properties"]["rows"] == 3  # three hours per cell


def test_privacy_parameters_in_every_metadata_file(tmp_path: Path) -> None:
    built = mesh_built()
    folder = release(tmp_path, built)
    expected = built.privacy.as_dict()
    assert json.loads((folder / "privacy.json").read_text(encoding="utf-8"))["privacy"] == expected
    assert json.loads((folder / "datapackage.json").read_text(encoding="utf-8"))["privacy"] == expected
    dcat = json.loads((folder / "dcat.jsonld").read_text(encoding="utf-8"))
    assert dcat["@graph"][0]["chub:privacyParameters"]["@value"] == expected
    extras = {e["key"]: e["value"] for e in json.loads((folder / "ckan_package.json").read_text())["extras"]}
    assert json.loads(extras["privacy"]) == expected


def test_data_dictionary_in_japanese_and_english_with_units(tmp_path: Path) -> None:
    built = mesh_built()
    folder = release(tmp_path, built)
    rows = list(csv.DictReader(io.StringIO((folder / "data_dictionary.csv").read_text(encoding="utf-8"))))
    assert [r["name"] for r in rows] == [c.name for c in built.spec.columns]
    for row, column in zip(rows, built.spec.columns, strict=True):
        assert (row["unit"], row["title_ja"], row["title_en"]) == (
            column.unit,
            column.title_ja,
            column.title_en,
        )
        assert row["description_ja"] == column.description_ja
    markdown = (folder / "data_dictionary.md").read_text(encoding="utf-8")
    assert built.spec.title_ja in markdown and built.spec.title_en in markdown
    assert "131113" in markdown and "| `rsrp_median_dbm` | number | dBm |" in markdown
    assert "縦棒を含む" in markdown and "\\|" in markdown  # a pipe in a description does not break the table


def test_a_secret_in_the_parameters_is_never_written(tmp_path: Path) -> None:
    secret = "s3cret-ckan-token-0123456789"
    folder = tmp_path / "r"
    folder.mkdir()
    built = zone_built(parameters={"ckan_token": secret})
    with pytest.raises(PublishError, match="secret"):
        write_release(built, folder, settings(tmp_path).__class__(ckan_api_key=secret), version="v1")


def test_columns_must_match_the_spec(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    folder.mkdir()
    built = zone_built(table=zone_table_without_rate())
    with pytest.raises(ValueError, match="rate_per_100km"):
        write_release(built, folder, settings(tmp_path), version="v1")


def zone_table_without_rate() -> pa.Table:
    return zone_built().table.drop_columns(["rate_per_100km"])
