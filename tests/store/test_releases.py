"""``store.releases``: reading the release layout publish writes, and deciding what may be served."""

from __future__ import annotations

import json
from pathlib import Path

from store.releases import ReleaseStore
from tests.api.api_harness import write_release_folder


def test_latest_follows_the_pointer_or_falls_back_to_the_last_complete_version(tmp_path: Path) -> None:
    write_release_folder(tmp_path, "ds", "2025-03-14_2025-03-14-r1", {"ds.csv": b"a\r\n"})
    write_release_folder(tmp_path, "ds", "2025-03-15_2025-03-15-r1", {"ds.csv": b"b\r\n"})
    store = ReleaseStore(tmp_path)
    assert store.latest("ds") == "2025-03-15_2025-03-15-r1"
    (tmp_path / "ds" / "latest").write_text(json.dumps({"version": "2025-03-14_2025-03-14-r1"}))
    assert store.latest("ds") == "2025-03-14_2025-03-14-r1"
    (tmp_path / "ds" / "latest").write_text(json.dumps({"version": "2099-01-01_2099-01-01-r1"}))
    assert store.latest("ds") == "2025-03-15_2025-03-15-r1"  # names no complete version
    (tmp_path / "ds" / "latest").write_text("not json")
    assert store.latest("ds") == "2025-03-15_2025-03-15-r1"
    assert store.resolve_version("ds", "latest") == "2025-03-15_2025-03-15-r1"
    assert store.latest("absent") is None and store.release("absent", "latest") is None


def test_only_manifest_files_with_plain_names_are_servable(tmp_path: Path) -> None:
    folder = write_release_folder(tmp_path, "ds", "v1", {"ds.csv": b"a\r\n"}, unlisted={"extra.csv": b"x"})
    store = ReleaseStore(tmp_path)
    found = store.servable("ds", "v1", "ds.csv")
    assert found is not None and found.path == (folder / "ds.csv").resolve()
    assert found.media_type == "text/csv; charset=utf-8" and found.is_data
    manifest = store.servable("ds", "latest", "manifest.json")
    assert manifest is not None and not manifest.is_data
    for dataset, version, name in [
        ("ds", "v1", "extra.csv"),  # on disk, not in the manifest
        ("ds", "v1", "../v1/ds.csv"),
        ("ds", "v1", ".."),
        ("ds", "..", "ds.csv"),
        ("..", "v1", "ds.csv"),
        ("ds", "v1", "/etc/passwd"),
        ("ds", ".v1", "ds.csv"),
        ("ds", "v2", "ds.csv"),
    ]:
        assert store.servable(dataset, version, name) is None, (dataset, version, name)


def test_titles_licenses_and_publisher_come_from_the_datapackage(tmp_path: Path) -> None:
    package = {
        "title": "Speed",
        "title_ja": "速度",
        "licenses": [{"name": "PDL-1.0", "path": "https://example.jp/pdl", "title": "PDL"}],
        "contributors": [
            {"title": "大田区 (Ota City)", "path": "https://www.city.ota.tokyo.jp/", "roles": ["publisher"]}
        ],
    }
    write_release_folder(tmp_path, "ds", "v1", {"ds.csv": b"a\r\n"}, package=package)
    release = ReleaseStore(tmp_path).release("ds", "v1")
    assert release is not None
    assert (release.title_ja, release.title_en) == ("速度", "Speed")
    assert (release.publisher_ja, release.publisher_en) == ("大田区", "Ota City")
    assert [x.id for x in release.licenses] == ["PDL-1.0"]
    assert release.rows == 2 and release.date_from == "2025-03-14"
    assert {f.name for f in release.files} == {"ds.csv", "provenance.json", "datapackage.json"}
