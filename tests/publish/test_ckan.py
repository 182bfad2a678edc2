"""CKAN: the package_create-ready JSON, and the push through ckanapi to a fake CKAN portal.

The portal is the one thing mocked (it lives off this machine): a small HTTP server on a free loopback
port that speaks the four actions the push uses (package_show, package_create, package_update,
resource_create) the way CKAN answers them, records every request, and checks the API key.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from release_samples import mesh_built, settings, zone_built

from publish.ckan import CkanError, push_to_ckan
from publish.export import write_release
from store.errors import CorridorHubError

API_KEY = "ckan-token-7f3a9c1e5b2d4f60"


@dataclass
class FakePortal:
    """What the fake CKAN holds and saw."""

    url: str = ""
    packages: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name
    uploads: dict[str, bytes] = field(default_factory=dict)  # resource name -> bytes
    requests: list[dict[str, Any]] = field(default_factory=list)  # action, headers, body


def _handler(portal: FakePortal) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, kind: str, **extra: Any) -> None:
            self._answer(status, {"success": False, "error": {"__type": kind, **extra}})

        def _form(self, raw: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
            content_type = self.headers["Content-Type"]
            if content_type.startswith("application/json"):
                return json.loads(raw or b"{}"), {}
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + raw
            )
            fields: dict[str, Any] = {}
            files: dict[str, bytes] = {}
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                if part.get_filename():
                    files[str(name)] = payload
                else:
                    fields[str(name)] = payload.decode()
            return fields, files

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            action = self.path.rsplit("/", 1)[-1]
            data, files = self._form(raw)
            portal.requests.append(
                {"action": action, "headers": dict(self.headers), "body": raw, "data": data}
            )
            if self.headers.get("Authorization") != API_KEY:
                return self._error(403, "Authorization Error", message="Access denied")
            by_id = {p["id"]: p for p in portal.packages.values()}
            if action == "package_show":
                found = portal.packages.get(data["id"]) or by_id.get(data["id"])
                if found is None:
                    return self._error(404, "Not Found Error", message="Not found")
                return self._answer(200, {"success": True, "result": found})
            if action in ("package_create", "package_update"):
                if not data.get("name") or data.get("license_id") is None:
                    return self._error(409, "Validation Error", name=["Missing value"])
                previous = by_id.get(data.get("id", ""))
                if action == "package_create" and data["name"] in portal.packages:
                    return self._error(409, "Validation Error", name=["That URL is already in use."])
                if action == "package_update" and previous is None:
                    return self._error(404, "Not Found Error", message="Not found")
                package = {**data, "id": previous["id"] if previous else str(uuid.uuid4())}
                package["resources"] = list(data.get("resources", []))
                portal.packages[package["name"]] = package
                return self._answer(200, {"success": True, "result": package})
            if action == "resource_create":
                owner = by_id.get(data["package_id"])
                if owner is None or "upload" not in files:
                    return self._error(409, "Validation Error", package_id=["Not found or no upload"])
                resource = {**data, "id": str(uuid.uuid4()), "url": f"{portal.url}/dl/{data['name']}"}
                owner["resources"].append(resource)
                portal.uploads[data["name"]] = files["upload"]
                return self._answer(200, {"success": True, "result": resource})
            return self._error(400, "Bad Request", message=f"unknown action {action}")

    return Handler


@pytest.fixture
def portal() -> Iterator[FakePortal]:
    state = FakePortal()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def release(tmp_path: Path, built: Any, name: str = "release", **kwargs: Any) -> tuple[Path, list[Path]]:
    folder = tmp_path / name
    folder.mkdir()
    paths = write_release(
        built, folder, settings(tmp_path), version=kwargs.pop("version", "2024-06-02"), **kwargs
    )
    return folder, paths


def package_of(folder: Path) -> dict[str, Any]:
    package: dict[str, Any] = json.loads((folder / "ckan_package.json").read_text(encoding="utf-8"))
    return package


def test_ckan_package_json_is_ready_for_package_create(tmp_path: Path) -> None:
    built = mesh_built()
    folder, paths = release(tmp_path, built, base_url="https://hub.example.jp")
    package = package_of(folder)
    assert package["name"] == "ota-corridor-network-quality-mesh"
    assert built.spec.title_ja in package["title"] and built.spec.title_en in package["title"]
    assert package["license_id"] == "cc-by" and package["version"] == "2024-06-02"
    assert {"name": "通信品質"} in package["tags"] and {"name": "network quality"} in package["tags"]
    extras = {e["key"]: e["value"] for e in package["extras"]}
    assert extras["publisher_local_government_code"] == "131113"
    assert extras["license_url"] == "https://www.digital.go.jp/resources/open_data/public_data_license_v1.0"
    assert extras["temporal_start"] == "2024-06-01" and extras["temporal_end"] == "2024-06-02"
    assert json.loads(extras["spatial"])["type"] == "Polygon"
    assert all(isinstance(v, str) for v in extras.values())  # CKAN extras are strings
    names = {r["name"] for r in package["resources"]}
    assert names == {p.name for p in paths} - {"ckan_package.json", "manifest.json"}
    csv_resource = next(
        r for r in package["resources"] if r["name"].endswith(".csv") and r["format"] == "CSV"
    )
    assert csv_resource["url"].startswith("https://hub.example.jp/v1/datasets/network-quality-mesh/releases/")
    assert csv_resource["hash"].startswith("sha256:")


def test_push_creates_the_package_and_uploads_every_file(
    tmp_path: Path, portal: FakePortal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    folder, paths = release(tmp_path, zone_built())
    shown = push_to_ckan(package_of(folder), paths, portal.url, API_KEY)
    assert [r["action"] for r in portal.requests][:2] == ["package_show", "package_create"]
    stored = portal.packages["ota-corridor-safety-events"]
    assert shown["id"] == stored["id"]
    assert stored["license_id"] == "cc-by" and stored["version"] == "2024-06-02"
    assert {e["key"]: e["value"] for e in stored["extras"]}["publisher_local_government_code"] == "131113"
    assert [r["name"] for r in stored["resources"]] == [p.name for p in paths]
    for path in paths:
        assert portal.uploads[path.name] == path.read_bytes(), path.name
    csv_resource = next(r for r in stored["resources"] if r["name"] == "safety-events.csv")
    assert (
        csv_resource["hash"]
        == "sha256:" + hashlib.sha256((folder / "safety-events.csv").read_bytes()).hexdigest()
    )
    # the key goes in the Authorization header of every request, and nowhere else
    for request in portal.requests:
        assert request["headers"]["Authorization"] == API_KEY
        assert API_KEY.encode() not in request["body"]
    assert API_KEY not in caplog.text


def test_push_again_updates_and_replaces_the_resources(tmp_path: Path, portal: FakePortal) -> None:
    first, first_paths = release(tmp_path, zone_built(), "v1", version="v1")
    push_to_ckan(package_of(first), first_paths, portal.url, API_KEY)
    package_id = portal.packages["ota-corridor-safety-events"]["id"]
    second, second_paths = release(tmp_path, zone_built(), "v2", version="v2")
    push_to_ckan(package_of(second), second_paths, portal.url, API_KEY)
    assert "package_update" in [r["action"] for r in portal.requests]
    stored = portal.packages["ota-corridor-safety-events"]
    assert stored["id"] == package_id and stored["version"] == "v2"
    assert [r["name"] for r in stored["resources"]] == [p.name for p in second_paths]  # not doubled


def test_a_refused_key_is_a_clear_error_that_never_shows_the_key(tmp_path: Path, portal: FakePortal) -> None:
    wrong = "wrong-token-0a1b2c3d4e5f6789"
    folder, paths = release(tmp_path, zone_built())
    with pytest.raises(CkanError) as caught:
        push_to_ckan(package_of(folder), paths, portal.url, wrong)
    assert isinstance(caught.value, CorridorHubError)
    assert "not authorized" in str(caught.value) and portal.url in str(caught.value)
    assert wrong not in str(caught.value) and caught.value.__cause__ is None
    assert portal.requests[0]["headers"]["Authorization"] == wrong  # it was sent, only in the header


def test_rejected_metadata_says_what_ckan_said(tmp_path: Path, portal: FakePortal) -> None:
    folder, paths = release(tmp_path, zone_built())
    package = package_of(folder)
    del package["license_id"]
    with pytest.raises(CkanError, match="rejected package_create.*Missing value"):
        push_to_ckan(package, paths, portal.url, API_KEY)


def test_an_unreachable_portal_is_a_clear_error(tmp_path: Path, portal: FakePortal) -> None:
    folder, paths = release(tmp_path, zone_built())
    closed = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(CkanError, match="Cannot reach CKAN") as caught:
        push_to_ckan(package_of(folder), paths, closed, API_KEY, timeout_s=5)
    assert API_KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "key", "message"), [("ftp://x", API_KEY, "ckan_url"), ("http://x", None, "ckan_api_key")]
)
def test_bad_settings_fail_by_name(tmp_path: Path, url: str, key: str | None, message: str) -> None:
    folder, paths = release(tmp_path, zone_built())
    with pytest.raises(CkanError, match=message):
        push_to_ckan(package_of(folder), paths, url, key)
