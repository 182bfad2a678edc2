"""``GET /``: the open-data catalog page, in Japanese (default) or English (``?lang=en``), no key needed.

Server-rendered HTML with no JavaScript: every published dataset with its title, description, period,
privacy protection, licenses and download links for the files of its latest release, and its earlier
releases.  The two languages are switched with a plain link (``?lang=ja`` / ``?lang=en``); the page's
``lang`` attribute follows, and text from the other language (file names, ids) carries its own.

Jinja2 renders it with autoescaping on: every value comes from release folders on disk, which are
treated as untrusted text.  The data comes from ``store.releases`` through the same code as the JSON
routes (``api.datasets``), so the page and ``/v1/datasets`` never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment

from api.catalog_template import TEMPLATE
from api.datasets import dataset_out, file_url, store
from store.releases import MANIFEST, Release

router = APIRouter(tags=["public"])

Lang = Literal["ja", "en"]
JST = timezone(timedelta(hours=9), "JST")

_env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_page = _env.from_string(TEMPLATE)

#: The words of the page, per language.
WORDS: dict[str, dict[str, str]] = {
    "ja": {
        "title": "羽田・蒲田 5G コリドー オープンデータ",
        "lead": "自動運転・ロボットの実証走行で集めたテレメトリを匿名化した統計データです。"
        "どなたでも鍵なしでダウンロードできます。",
        "publisher": "公開者",
        "license": "利用規約",
        "compatible": "と互換性があります",
        "datasets": "データセット",
        "latest": "最新版",
        "period": "対象期間 (日本時間)",
        "published": "公開日時",
        "rows": "行数",
        "privacy": "プライバシー保護",
        "privacy_text": "各セルは {k} 台以上の端末から集計。秘匿セル {suppressed} / {cells} 件。",
        "privacy_text_dp": "端末・日単位の差分プライバシー (ε = {epsilon:g})。値はすべてノイズを含み、"
        "ノイズを加えた端末数が {threshold} 以上のセルを公開 (実際の端末数は k 未満のこともあります)。"
        "非公開セル {suppressed} / {cells} 件。",
        "downloads": "ダウンロード",
        "file": "ファイル",
        "size": "サイズ",
        "earlier": "過去の版",
        "manifest": "マニフェスト (sha256)",
        "api": "API",
        "api_text": "機械可読な一覧は /v1/datasets、API の説明は /docs にあります。",
        "empty": "まだ公開されたデータセットはありません。",
        "empty_how": "データを取り込んだ後、次のコマンドで公開できます:",
        "switch": "English",
        "releases": "全 {n} 版",
    },
    "en": {
        "title": "Haneda-Kamata 5G corridor open data",
        "lead": "Anonymized statistics from the telemetry of autonomous-driving and robotics trials. "
        "Anyone may download them, no key needed.",
        "publisher": "Publisher",
        "license": "License",
        "compatible": "compatible with",
        "datasets": "Datasets",
        "latest": "Latest release",
        "period": "Period (Japan time)",
        "published": "Published",
        "rows": "Rows",
        "privacy": "Privacy",
        "privacy_text": "Every cell aggregates at least {k} devices. "
        "{suppressed} of {cells} cells suppressed.",
        "privacy_text_dp": "Differential privacy per device-day (ε = {epsilon:g}): every value is noisy; "
        "a cell is published where its noisy device count is at least {threshold} (its true device count "
        "may be below k). {suppressed} of {cells} cells not published.",
        "downloads": "Downloads",
        "file": "File",
        "size": "Size",
        "earlier": "Earlier releases",
        "manifest": "Manifest (sha256)",
        "api": "API",
        "api_text": "A machine-readable list is at /v1/datasets; the API is described at /docs.",
        "empty": "No dataset has been published yet.",
        "empty_how": "Once telemetry has been ingested, publish with:",
        "switch": "日本語",
        "releases": "{n} releases",
        "release": "1 release",
    },
}

#: Labels of the files of a release, by name ending.
FILE_LABELS = {
    ".parquet": ("データ (Parquet)", "Data (Parquet)"),
    ".csv": ("データ (CSV)", "Data (CSV)"),
    ".geojson": ("メッシュ (GeoJSON)", "Mesh cells (GeoJSON)"),
    "data_dictionary.csv": ("データ辞書 (CSV)", "Data dictionary (CSV)"),
    "data_dictionary.md": ("データ辞書 (Markdown)", "Data dictionary (Markdown)"),
    "privacy.json": ("プライバシー保護の設定", "Privacy parameters"),
    "provenance.json": ("来歴", "Provenance"),
    "datapackage.json": ("データパッケージ (Frictionless)", "Data Package (Frictionless)"),
    "dcat.jsonld": ("DCAT メタデータ (JSON-LD)", "DCAT metadata (JSON-LD)"),
    "ckan_package.json": ("CKAN パッケージ", "CKAN package"),
}


def _web_url(url: str | None) -> bool:
    """Only http(s) links from release metadata reach the page (never ``javascript:`` and the like)."""
    return url is not None and url.lower().startswith(("https://", "http://"))


def file_label(name: str, lang: str) -> str:
    labels = FILE_LABELS.get(name) or FILE_LABELS.get("." + name.rpartition(".")[2])
    if labels is None:
        return name
    return labels[0] if lang == "ja" else labels[1]


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} B"  # pragma: no cover


def jst_time(instant: str | None) -> str | None:
    """An ISO 8601 instant as Japan time for people, e.g. ``2025-03-15 09:00 JST``."""
    if instant is None:
        return None
    try:
        moment = datetime.fromisoformat(instant)
    except ValueError:
        return instant
    if moment.tzinfo is None:
        return instant
    return moment.astimezone(JST).strftime("%Y-%m-%d %H:%M JST")


@dataclass(frozen=True)
class DownloadLink:
    name: str
    label: str
    size: str
    sha256: str
    url: str


@dataclass(frozen=True)
class DatasetView:
    id: str
    title: str
    description: str
    latest: Release | None
    downloads: list[DownloadLink]
    manifest_url: str | None
    privacy: str | None
    published_at: str | None
    earlier: list[tuple[str, str]]  # (version, manifest url)
    releases: str  # "1 release", "3 releases", "全 3 版"


def _count(releases: int, lang: str) -> str:
    words = WORDS[lang]
    return words["release"] if releases == 1 and "release" in words else words["releases"].format(n=releases)


def _privacy_text(release: Release, lang: str) -> str | None:
    p = release.privacy
    k, cells, published = p.get("k"), p.get("cells_before"), p.get("cells_published")
    if not all(isinstance(v, int) for v in (k, cells, published)):
        return None
    assert isinstance(cells, int) and isinstance(published, int)
    epsilon = p.get("epsilon")
    dp = p.get("differential_privacy")
    threshold = dp.get("publication_threshold") if isinstance(dp, dict) else None
    if isinstance(epsilon, int | float):  # say what DP gives, no more (privacy.json holds the rest)
        if not isinstance(threshold, int):
            return None
        return WORDS[lang]["privacy_text_dp"].format(
            threshold=threshold, suppressed=cells - published, cells=cells, epsilon=epsilon
        )
    return WORDS[lang]["privacy_text"].format(k=k, suppressed=cells - published, cells=cells)


def dataset_view(
    release: Release | None, dataset: str, count: int, earlier: list[str], lang: str
) -> DatasetView:
    if release is None:
        return DatasetView(dataset, dataset, "", None, [], None, None, None, [], _count(count, lang))
    downloads = [
        DownloadLink(f.name, file_label(f.name, lang), human_size(f.bytes), f.sha256,
                     file_url(dataset, release.version, f.name))
        for f in sorted(release.files, key=lambda f: (not f.name.startswith(f"{dataset}."), f.name))
    ]  # fmt: skip
    return DatasetView(
        id=dataset,
        title=release.title_ja if lang == "ja" else release.title_en,
        description=(release.description_ja if lang == "ja" else release.description_en).strip(),
        latest=release,
        downloads=downloads,
        manifest_url=file_url(dataset, release.version, MANIFEST),
        privacy=_privacy_text(release, lang),
        published_at=jst_time(release.published_at),
        earlier=[(v, file_url(dataset, v, MANIFEST)) for v in reversed(earlier)],
        releases=_count(count, lang),
    )


@router.get("/", response_class=HTMLResponse, summary="The open-data catalog page (HTML)")
def catalog_page(
    request: Request,
    lang: Annotated[Lang, Query(description="Language of the page: ja (default) or en")] = "ja",
) -> HTMLResponse:
    releases = store(request)
    views = []
    licenses: dict[str, tuple[str, str]] = {}  # url -> (id, title), in the order releases name them
    publisher: tuple[str, str, str | None] | None = None
    for dataset in releases.dataset_ids():
        _, latest = dataset_out(releases, dataset)
        versions = releases.versions(dataset)
        earlier = [v for v in versions if latest is None or v != latest.version]
        views.append(dataset_view(latest, dataset, len(versions), earlier, lang))
        if latest is not None:
            for item in latest.licenses:
                if _web_url(item.url):
                    licenses.setdefault(item.url, (item.id, item.title))
            if publisher is None and latest.publisher_ja and latest.publisher_en:
                url = latest.publisher_url if _web_url(latest.publisher_url) else None
                publisher = (latest.publisher_ja, latest.publisher_en, url)
    html = _page.render(
        lang=lang,
        other="en" if lang == "ja" else "ja",
        w=WORDS[lang],
        datasets=views,
        licenses=[(url, lid, title) for url, (lid, title) in licenses.items()],
        publisher=publisher,
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-cache", "Content-Language": lang})
