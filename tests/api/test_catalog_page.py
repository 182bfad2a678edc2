"""The catalog page at ``/``: a real headless browser over ``corridorhub serve``, and the HTML itself.

The browser test drives Debian's chromium (``apt-get install chromium``) with Playwright for Python,
never a browser downloaded by ``playwright install``.  Without chromium it fails with the install hint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_harness import write_release_folder
from fastapi.testclient import TestClient

from api import create_app
from publish.datasets import default_ids
from publish.release import publish_release
from store.settings import Settings
from tests.publish.telemetry import DAY, Fleet, fleet_lake

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = (
    "the catalog page test needs Debian's chromium: sudo apt-get install chromium "
    "(and the dev extras for Playwright: pip install -e '.[dev]'; never `playwright install`)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A 12-device lake, and a release of every default dataset (those left empty by k included)."""
    root = tmp_path_factory.mktemp("catalog")
    settings = Settings(lake=root / "lake", releases=root / "releases")
    lake = fleet_lake(root / "lake", Fleet(devices=12))
    for dataset in default_ids():
        publish_release(lake, dataset, DAY, DAY, settings, allow_empty=True)
    return settings


@pytest.fixture(scope="module")
def served(published: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``corridorhub serve`` over the published releases on a free loopback port; yields its base URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [sys.executable, "-m", "corridorhub", "serve", "--lake", str(published.lake)]
    cmd += ["--releases", str(published.releases), "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"corridorhub serve did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(20)


def _launch_chromium(playwright: object) -> object:
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")):
        pytest.fail(INSTALL_HINT, pytrace=False)
    executable = CHROMIUM if os.access(CHROMIUM, os.X_OK) else str(shutil.which("chromium"))
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)  # type: ignore[attr-defined]


def test_the_catalog_page_in_a_real_browser(published: Settings, served: str, tmp_path: Path) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(INSTALL_HINT, pytrace=False)
    catalog = httpx.get(f"{served}/v1/datasets").json()["datasets"]
    nonempty = {d["id"] for d in catalog} & {"traffic-speed-mesh", "fleet-activity", "network-quality-mesh"}
    assert len(catalog) == len(default_ids()) and nonempty
    with sync_playwright() as playwright:
        browser = _launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)  # type: ignore[attr-defined]
            page.goto(f"{served}/")
            assert page.locator("html").get_attribute("lang") == "ja"
            assert (
                page.get_by_role("heading", level=1).inner_text() == "羽田・蒲田 5G コリドー オープンデータ"
            )
            assert "大田区" in page.locator("section.about").inner_text()
            assert page.locator("a.license").first.get_attribute("href") == (
                "https://www.digital.go.jp/resources/open_data/public_data_license_v1.0"
            )
            for dataset in catalog:
                article = page.locator(f"article#{dataset['id']}")
                assert article.locator("h3").inner_text() == dataset["title"]["ja"]
                assert article.locator("a.download").first.is_visible()
            page.screenshot(path=str(tmp_path / "catalog-ja.png"), full_page=True)

            # The other language, through the plain link (no JavaScript needed).
            page.get_by_role("link", name="English").click()
            page.wait_for_url(f"{served}/?lang=en")
            assert page.locator("html").get_attribute("lang") == "en"
            assert "Ota City" in page.locator("section.about").inner_text()
            for dataset in catalog:
                article = page.locator(f"article#{dataset['id']}")
                assert article.locator("h3").inner_text() == dataset["title"]["en"]
                assert article.locator("a.download").first.is_visible()
            page.screenshot(path=str(tmp_path / "catalog-en.png"), full_page=True)

            # Download the data file of a non-empty dataset by clicking its link: the manifest's sha256.
            dataset_id = sorted(nonempty)[0]
            version = next(d["latest_version"] for d in catalog if d["id"] == dataset_id)
            manifest = json.loads(
                (Path(published.releases) / dataset_id / version / "manifest.json").read_text()
            )
            wanted = {e["path"]: e["sha256"] for e in manifest["files"]}
            link = page.locator(f"article#{dataset_id} a.download", has_text=f"{dataset_id}.csv")
            assert link.get_attribute("data-sha256") == wanted[f"{dataset_id}.csv"]
            with page.expect_download() as info:
                link.click()
            download = info.value
            assert download.suggested_filename == f"{dataset_id}.csv"
            saved = tmp_path / download.suggested_filename
            download.save_as(saved)
            assert hashlib.sha256(saved.read_bytes()).hexdigest() == wanted[f"{dataset_id}.csv"]
            # Every other link on the page answers 200 and matches the manifest.
            hrefs = page.locator(f"article#{dataset_id} a.download").evaluate_all(
                "els => els.map(e => e.href)"
            )
            assert {h.rsplit("/", 1)[1] for h in hrefs} == set(wanted)
            for href in hrefs:
                body = httpx.get(href).content
                assert hashlib.sha256(body).hexdigest() == wanted[href.rsplit("/", 1)[1]], href
        finally:
            browser.close()  # type: ignore[attr-defined]
    assert (tmp_path / "catalog-ja.png").stat().st_size > 10_000


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_the_page_escapes_whatever_a_release_folder_says(tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    package = {
        "title": HOSTILE,
        "title_ja": HOSTILE + "日本語",
        "description": "</p><iframe src=//evil>",
        "description_ja": "&amp; <b>bold</b>",
        "licenses": [{"name": "X\"'><", "path": "javascript:alert(1)", "title": "<i>bad</i>"}],
        "contributors": [
            {"title": "<b>悪</b> (<b>Evil</b>)", "path": "javascript:alert(2)", "roles": ["publisher"]}
        ],
    }
    write_release_folder(releases, "hostile", "v1", {"hostile.csv": b"a\r\n1\r\n"}, package=package)
    with TestClient(create_app(Settings(lake=tmp_path / "lake", releases=releases))) as client:
        for lang in ("ja", "en"):
            html = client.get(f"/?lang={lang}").text
            assert "<script" not in html and "<iframe" not in html and "<img" not in html
            assert "<b>" not in html and "<i>bad" not in html
            assert "javascript:" not in html
            assert "&lt;script&gt;" in html
        assert "&amp;amp; &lt;b&gt;bold&lt;/b&gt;" in client.get("/").text


def test_the_page_in_each_language_and_an_empty_catalog(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(lake=tmp_path / "lake", releases=tmp_path / "none"))) as client:
        ja = client.get("/")
        assert ja.status_code == 200 and ja.headers["content-type"] == "text/html; charset=utf-8"
        assert '<html lang="ja">' in ja.text and "まだ公開されたデータセットはありません" in ja.text
        assert "corridorhub publish --all --from" in ja.text
        en = client.get("/?lang=en")
        assert '<html lang="en">' in en.text and "No dataset has been published yet." in en.text
        assert client.get("/?lang=fr").status_code == 422


def test_the_page_lists_what_the_json_routes_list(published: Settings) -> None:
    with TestClient(create_app(published)) as client:
        html = client.get("/").text
        for dataset in client.get("/v1/datasets").json()["datasets"]:
            assert dataset["title"]["ja"] in html and f'id="{dataset["id"]}"' in html
            assert f"/v1/datasets/{dataset['id']}/releases/{dataset['latest_version']}/manifest.json" in html
        assert "公共データ利用規約" in html and "https://creativecommons.org/licenses/by/4.0/" in html
