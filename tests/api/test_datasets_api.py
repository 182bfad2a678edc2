"""The public dataset routes over real releases (``publish.release.publish_release`` on a real lake).

The routes serve exactly the files of a release's manifest (and the manifest), with their content types,
the manifest's sha256 as ETag, conditional and range requests, and 404 in the one JSON error shape for
everything else: files on disk the manifest does not list, traversal attempts, unknown ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_harness import write_release_folder
from fastapi.testclient import TestClient
from test_errors import assert_error_shape

from api import create_app
from publish.release import publish_release
from store.settings import Settings
from tests.publish.telemetry import DAY, Fleet, fleet_lake

DATASETS = ("traffic-speed-mesh", "fleet-activity")
CONTENT_TYPES = {
    ".parquet": "application/vnd.apache.parquet",
    ".csv": "text/csv; charset=utf-8",
    ".geojson": "application/geo+json",
    ".jsonld": "application/ld+json",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
}


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A 12-device lake and one real release of two datasets."""
    root = tmp_path_factory.mktemp("published")
    settings = Settings(lake=root / "lake", releases=root / "releases")
    lake = fleet_lake(root / "lake", Fleet(devices=12))
    for dataset in DATASETS:
        publish_release(lake, dataset, DAY, DAY, settings)
    return settings


@pytest.fixture
def settings(published: Settings, tmp_path: Path) -> Settings:
    """A private copy of the published releases, free to damage."""
    shutil.copytree(published.releases, tmp_path / "releases")
    return Settings(lake=published.lake, releases=tmp_path / "releases")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def version_of(settings: Settings, dataset: str) -> str:
    return str(json.loads((Path(settings.releases) / dataset / "latest").read_text())["version"])


def manifest_of(settings: Settings, dataset: str) -> dict[str, dict[str, object]]:
    folder = Path(settings.releases) / dataset / version_of(settings, dataset)
    return {e["path"]: e for e in json.loads((folder / "manifest.json").read_text())["files"]}


def url(dataset: str, version: str, name: str) -> str:
    return f"/v1/datasets/{dataset}/releases/{version}/{name}"


@pytest.mark.parametrize("dataset", DATASETS)
def test_the_public_routes_serve_exactly_the_files_of_the_manifest(
    settings: Settings, client: TestClient, dataset: str
) -> None:
    version = version_of(settings, dataset)
    folder = Path(settings.releases) / dataset / version
    manifest = manifest_of(settings, dataset)
    # Things on disk that are not in the manifest: a stray file, a hidden file, a folder.
    (folder / "stray.csv").write_text("device_id\r\nveh-0-001\r\n")
    (folder / ".hidden.json").write_text("{}")
    (folder / "sub").mkdir()
    (folder / "sub" / "x.csv").write_text("x")

    served = set()
    for name in sorted(os.listdir(folder)):
        response = client.get(url(dataset, version, name))
        if response.status_code == 200:
            served.add(name)
        else:
            assert_error_shape(response, 404)
    assert served == set(manifest) | {"manifest.json"}
    assert assert_error_shape(client.get(url(dataset, version, "stray.csv")), 404, "file_not_found")

    for name, entry in manifest.items():
        response = client.get(url(dataset, version, name))
        assert hashlib.sha256(response.content).hexdigest() == entry["sha256"], name
        assert len(response.content) == entry["bytes"]
        assert response.headers["etag"] == f'"{entry["sha256"]}"'
        assert response.headers["content-type"] == CONTENT_TYPES[Path(name).suffix]
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        kind = "attachment" if Path(name).suffix in (".parquet", ".csv", ".geojson") else "inline"
        assert response.headers["content-disposition"] == f'{kind}; filename="{name}"'

    # The listing names the same files, with the same checksums and working URLs.
    listed = client.get(f"/v1/datasets/{dataset}/releases").json()["releases"]
    assert [r["version"] for r in listed] == [version]
    assert {f["name"]: f["sha256"] for f in listed[0]["files"]} == {
        n: e["sha256"] for n, e in manifest.items()
    }
    manifest_response = client.get(listed[0]["manifest"])
    assert manifest_response.json()["files"] == list(manifest.values())
    assert manifest_response.headers["etag"] == f'"{hashlib.sha256(manifest_response.content).hexdigest()}"'


def test_the_dataset_list_has_titles_in_both_languages_license_and_links(client: TestClient) -> None:
    datasets = {d["id"]: d for d in client.get("/v1/datasets").json()["datasets"]}
    assert set(datasets) == set(DATASETS)
    speed = datasets["traffic-speed-mesh"]
    assert speed["title"]["ja"].startswith("走行速度") and speed["title"]["en"].startswith("Traffic speed")
    assert speed["description"]["ja"] and speed["description"]["en"]
    assert speed["latest_version"] == "2025-03-14_2025-03-14-r1" and speed["releases"] == 1
    assert speed["publisher"] == {"ja": "大田区", "en": "Ota City"}
    assert speed["license"]["id"] == "PDL-1.0" and speed["license"]["url"].startswith(
        "https://www.digital.go.jp/"
    )
    assert "CC-BY-4.0" in {x["id"] for x in speed["licenses"]}
    for link in speed["links"].values():
        assert client.get(link).status_code == 200, link
    detail = client.get("/v1/datasets/traffic-speed-mesh").json()
    assert detail["latest"]["version"] == speed["latest_version"]
    assert detail["latest"]["privacy"]["k"] == 10 and detail["latest"]["rows"] > 0


def test_etag_if_none_match_and_head(settings: Settings, client: TestClient) -> None:
    version = version_of(settings, "traffic-speed-mesh")
    target = url("traffic-speed-mesh", version, "traffic-speed-mesh.parquet")
    full = client.get(target)
    etag = full.headers["etag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = client.get(target, headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b"" and response.headers["etag"] == etag
    assert client.get(target, headers={"If-None-Match": '"other"'}).status_code == 200
    head = client.head(target)
    assert head.status_code == 200 and head.content == b""
    for name in ("etag", "content-type", "content-length", "content-disposition", "cache-control"):
        assert head.headers[name] == full.headers[name], name
    assert int(head.headers["content-length"]) == len(full.content)
    assert client.head(url("traffic-speed-mesh", version, "nope.csv")).status_code == 404


def test_range_requests(settings: Settings, client: TestClient) -> None:
    version = version_of(settings, "traffic-speed-mesh")
    target = url("traffic-speed-mesh", version, "traffic-speed-mesh.csv")
    body = client.get(target).content
    size = len(body)
    assert client.get(target).headers["accept-ranges"] == "bytes"
    for header, start, end in (
        ("bytes=0-9", 0, 10),
        ("bytes=100-", 100, size),
        ("bytes=-16", size - 16, size),
    ):
        response = client.get(target, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.content == body[start:end]
        assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
        assert (
            response.headers["etag"]
            == f'"{manifest_of(settings, "traffic-speed-mesh")[Path(target).name]["sha256"]}"'
        )
    response = client.get(target, headers={"Range": f"bytes={size}-"})
    assert_error_shape(response, 416, "range_not_satisfiable")
    assert response.headers["content-range"] == f"bytes */{size}"
    assert_error_shape(client.get(target, headers={"Range": "lines=1-2"}), 400, "invalid_range")
    # If-Range with another validator: the range is ignored and the whole file sent.
    stale = client.get(target, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert stale.status_code == 200 and stale.content == body
    fresh = client.get(target, headers={"Range": "bytes=0-9", "If-Range": stale.headers["etag"]})
    assert fresh.status_code == 206 and fresh.content == body[:10]
    head = client.head(target, headers={"Range": "bytes=0-9"})
    assert head.status_code == 206 and head.headers["content-length"] == "10" and head.content == b""


def test_latest_is_an_alias_served_with_revalidation(settings: Settings, client: TestClient) -> None:
    version = version_of(settings, "fleet-activity")
    versioned = client.get(url("fleet-activity", version, "fleet-activity.csv"))
    latest = client.get(url("fleet-activity", "latest", "fleet-activity.csv"))
    assert latest.status_code == 200 and latest.content == versioned.content
    assert latest.headers["etag"] == versioned.headers["etag"]
    assert latest.headers["cache-control"] == "public, no-cache"
    assert latest.headers["content-location"] == url("fleet-activity", version, "fleet-activity.csv")
    assert client.get("/v1/datasets/fleet-activity/releases/latest").json()["version"] == version


@pytest.mark.parametrize(
    "path",
    [
        "/v1/datasets/traffic-speed-mesh/releases/{v}/..%2F..%2F..%2Flake%2Fstate%2F_delta_log",
        "/v1/datasets/traffic-speed-mesh/releases/{v}/%2e%2e",
        "/v1/datasets/traffic-speed-mesh/releases/{v}/%2e%2e%2flatest",
        "/v1/datasets/traffic-speed-mesh/releases/%2e%2e/latest",
        "/v1/datasets/traffic-speed-mesh/releases/{v}/%2Fetc%2Fpasswd",
        "/v1/datasets/traffic-speed-mesh/releases/{v}/..%5C..%5Cmanifest.json",
        "/v1/datasets/traffic-speed-mesh/releases/..%2F..%2Ffleet-activity/manifest.json",
        "/v1/datasets/%2e%2e/releases/{v}/manifest.json",
        "/v1/datasets/.lock/releases/{v}/manifest.json",
        "/v1/datasets/traffic-speed-mesh/releases/latest/latest",
        "/v1/datasets/traffic-speed-mesh/releases/{v}/.lock",
        "/v1/datasets/traffic-speed-mesh/releases/.lock/manifest.json",
        "/v1/datasets/traffic-speed-mesh/releases/{v}/privacy-ledger.json",
        "/v1/datasets/traffic-speed-mesh/releases/{v}/%00manifest.json",
        "/v1/datasets/traffic-speed-mesh/releases/{v}/manifest.json%00.csv",
    ],
)
def test_traversal_attempts_are_404_in_the_json_shape(
    settings: Settings, client: TestClient, path: str
) -> None:
    (Path(settings.releases) / "traffic-speed-mesh" / "privacy-ledger.json").write_text("{}")
    response = client.get(path.format(v=version_of(settings, "traffic-speed-mesh")))
    assert_error_shape(response, 404)


def test_raw_dot_segments_never_leave_the_release(settings: Settings) -> None:
    """A client that does not normalise ``..`` (httpx would): the raw request target reaches the app."""
    from api_harness import serve

    version = version_of(settings, "fleet-activity")
    with serve(create_app(settings)) as base, httpx.Client() as http:
        for target in (
            f"/v1/datasets/fleet-activity/releases/{version}/../../traffic-speed-mesh/latest",
            f"/v1/datasets/fleet-activity/releases/{version}/../{version}/../../../../etc/passwd",
        ):
            request = http.build_request("GET", base)
            request.url = request.url.copy_with(raw_path=target.encode())
            response = http.send(request)
            assert response.status_code == 404, (target, response.text[:200])
            assert "root:" not in response.text and response.json()["error"]["status"] == 404


def test_unknown_ids_are_404_with_a_code(settings: Settings, client: TestClient) -> None:
    version = version_of(settings, "traffic-speed-mesh")
    cases = [
        ("/v1/datasets/nope", "dataset_not_found"),
        ("/v1/datasets/nope/releases", "dataset_not_found"),
        ("/v1/datasets/nope/releases/latest/manifest.json", "dataset_not_found"),
        ("/v1/datasets/traffic-speed-mesh/releases/2020-01-01_2020-01-01-r1", "release_not_found"),
        (
            "/v1/datasets/traffic-speed-mesh/releases/2020-01-01_2020-01-01-r1/manifest.json",
            "release_not_found",
        ),
        (url("traffic-speed-mesh", version, "fleet-activity.csv"), "file_not_found"),
        (url("traffic-speed-mesh", version, "TRAFFIC-SPEED-MESH.CSV"), "file_not_found"),
    ]
    for path, code in cases:
        error = assert_error_shape(client.get(path), 404, code)
        assert "/v1/datasets" in str(error["message"])


def test_hidden_incomplete_and_ledger_entries_are_ignored(settings: Settings, client: TestClient) -> None:
    root = Path(settings.releases)
    (root / ".tmp-x").mkdir()
    (root / "traffic-speed-mesh" / ".tmp-2025-03-15_2025-03-15-r1-abc").mkdir()
    (root / "traffic-speed-mesh" / "privacy-ledger.json").write_text("{}")
    half = root / "traffic-speed-mesh" / "2025-03-16_2025-03-16-r1"
    half.mkdir()
    (half / "manifest.json").write_text('{"files": []}')  # no provenance.json: not complete
    (root / "empty-dataset").mkdir()
    assert {d["id"] for d in client.get("/v1/datasets").json()["datasets"]} == set(DATASETS)
    versions = [
        r["version"] for r in client.get("/v1/datasets/traffic-speed-mesh/releases").json()["releases"]
    ]
    assert versions == [version_of(settings, "traffic-speed-mesh")]
    assert_error_shape(client.get("/v1/datasets/empty-dataset"), 404, "dataset_not_found")
    assert_error_shape(
        client.get("/v1/datasets/traffic-speed-mesh/releases/2025-03-16_2025-03-16-r1/manifest.json"), 404
    )


def test_the_ledger_and_the_release_log_are_never_served(settings: Settings, client: TestClient) -> None:
    """They sit at the top of the releases folder (publish wrote both here) and are no dataset."""
    root = Path(settings.releases)
    assert (root / "release-log.json").is_file()  # written by the exact releases of the fixture
    (root / "privacy-ledger.json").write_text('{"format": 2, "unit": "device-day", "entries": []}\n')
    for name in ("release-log.json", "release-log.json.lock", "privacy-ledger.json"):
        assert_error_shape(client.get(f"/v1/datasets/{name}"), 404, "dataset_not_found")
        assert_error_shape(client.get(f"/v1/datasets/{name}/releases/latest/manifest.json"), 404)
    listed = json.dumps(client.get("/v1/datasets").json())
    assert "release-log" not in listed and "privacy-ledger" not in listed


def test_a_symlink_out_of_the_release_is_not_served(tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_bytes(b"a,b\r\n1,2\r\n")
    releases = tmp_path / "releases"
    folder = write_release_folder(releases, "linked", "v1", {"data.csv": secret.read_bytes()})
    (folder / "data.csv").unlink()
    (folder / "data.csv").symlink_to(secret)  # listed in the manifest, same bytes, but outside the folder
    with TestClient(create_app(Settings(lake=tmp_path / "lake", releases=releases))) as client:
        assert_error_shape(client.get("/v1/datasets/linked/releases/v1/data.csv"), 404, "file_not_found")
        assert client.get("/v1/datasets/linked/releases/v1/provenance.json").status_code == 200


def test_a_file_that_no_longer_matches_its_manifest_is_not_served_as_if_it_did(tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    folder = write_release_folder(releases, "damaged", "v1", {"data.csv": b"a\r\n1\r\n"})
    (folder / "data.csv").write_bytes(b"a\r\n1\r\n2\r\n")
    with TestClient(create_app(Settings(lake=tmp_path / "lake", releases=releases))) as client:
        assert_error_shape(client.get("/v1/datasets/damaged/releases/v1/data.csv"), 503, "release_damaged")


def test_an_empty_or_missing_releases_folder_lists_nothing(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(lake=tmp_path / "lake", releases=tmp_path / "absent"))) as client:
        assert client.get("/v1/datasets").json() == {"datasets": []}
        assert_error_shape(client.get("/v1/datasets/traffic-speed-mesh"), 404, "dataset_not_found")


def test_an_earlier_release_of_the_withdrawn_trajectories_sample_is_gone(tmp_path: Path) -> None:
    """trajectories-sample was withdrawn (docs/PRIVACY.md): its releases on disk are listed nowhere and
    every route of it answers 410 Gone, saying why, even for a file its manifest lists."""
    releases = tmp_path / "releases"
    write_release_folder(
        releases,
        "trajectories-sample",
        "2025-03-14_2025-03-14-r1",
        {"trajectories-sample.csv": b"a\r\n1\r\n"},
    )
    write_release_folder(releases, "kept", "v1", {"kept.csv": b"a\r\n1\r\n"})
    with TestClient(create_app(Settings(lake=tmp_path / "lake", releases=releases))) as client:
        assert [d["id"] for d in client.get("/v1/datasets").json()["datasets"]] == ["kept"]
        assert "trajectories-sample" not in client.get("/").text
        assert "trajectories-sample" not in client.get("/?lang=en").text
        base = "/v1/datasets/trajectories-sample"
        for path in (
            base,
            f"{base}/releases",
            f"{base}/releases/latest",
            f"{base}/releases/2025-03-14_2025-03-14-r1/trajectories-sample.csv",
            f"{base}/releases/latest/manifest.json",
        ):
            error = assert_error_shape(client.get(path), 410, "dataset_withdrawn")
            assert isinstance(error["message"], str)
            assert "withdrawn" in error["message"] and "trips-od" in error["message"], path
        assert client.head(f"{base}/releases/latest/manifest.json").status_code == 410
