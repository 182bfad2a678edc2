"""Reading published releases from disk: datasets, versions, ``latest``, manifests, files to serve.

``publish.release`` writes the layout; this module only reads it, so that the API (which may import
``store`` but never ``publish``) can list and serve releases::

    {releases}/{dataset}/latest                    JSON naming the version published last
    {releases}/{dataset}/{version}/manifest.json   sha256, size and media type of every other file
    {releases}/{dataset}/{version}/provenance.json JST date range, rows, privacy applied, build time
    {releases}/{dataset}/{version}/datapackage.json  titles and descriptions (en, ``*_ja``), licenses
    {releases}/{dataset}/{version}/...             the files the manifest lists

Hidden entries (``.lock``, ``.tmp-*`` folders of a publish in progress) and files beside the dataset and
version folders (``latest``; at the top, the privacy ledger ``privacy-ledger.json`` and the release log
``release-log.json`` with their ``.lock`` files: they are files, never folders) are never datasets,
versions or servable files.  A version
folder counts once it holds both ``manifest.json`` and ``provenance.json`` (publish renames a finished
folder into place, so a half-written release is never seen).

**What may be served** (:meth:`ReleaseStore.servable`): exactly the files the release's manifest lists,
plus ``manifest.json`` itself, each resolved to a regular file directly inside the version folder.  A file
on disk that the manifest does not list, a name with a path separator or ``..``, a symlink anywhere below
the releases folder (a dataset or version folder, a file, ``latest``: never followed, wherever it leads), a
dataset or version name that is not a plain name: all are "not found" (``None``).  Names
must match :data:`NAME` (publish's own version rule), which also keeps them safe in URLs and headers.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LATEST = "latest"
MANIFEST = "manifest.json"
PROVENANCE = "provenance.json"
DATAPACKAGE = "datapackage.json"

#: A dataset id, version or file name that can be served: no separators, no leading dot, no "..".
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")

#: The Content-Type of each kind of release file (text types with their charset: every one is UTF-8).
MEDIA_TYPES = {
    ".parquet": "application/vnd.apache.parquet",
    ".csv": "text/csv; charset=utf-8",
    ".geojson": "application/geo+json",
    ".jsonld": "application/ld+json",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
}
#: Files whose content is the data itself (downloaded as attachments); the rest is metadata.
#: Datasets no longer built or served: the reason, which the public routes answer with (410 Gone) while
#: their earlier releases stay on disk for the hub's staff.  docs/PRIVACY.md says why each was withdrawn.
WITHDRAWN_DATASETS: Mapping[str, str] = {
    "trajectories-sample": (
        "an audit re-identified its trips (148 of 148 trips in classes under 10 devices, 27 unique; one "
        "15-minute sighting singled out 11 of 103 vehicle-days) and its trimmed starts could be walked back; "
        "trips between corridor zones are published as counts in trips-od instead"
    ),
}
DATA_SUFFIXES = frozenset({".parquet", ".csv", ".geojson"})


def media_type(name: str) -> str:
    return MEDIA_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def _plain_name(name: str) -> bool:
    return bool(NAME.fullmatch(name)) and ".." not in name


@dataclass(frozen=True)
class ReleaseFile:
    """One file of a release as its manifest lists it."""

    name: str
    bytes: int
    sha256: str
    media_type: str

    @property
    def is_data(self) -> bool:
        return Path(self.name).suffix.lower() in DATA_SUFFIXES


@dataclass(frozen=True)
class License:
    id: str
    title: str
    url: str


@dataclass(frozen=True)
class Release:
    """One complete version of a dataset, from its manifest, provenance and datapackage."""

    dataset: str
    version: str
    folder: Path
    files: tuple[ReleaseFile, ...]  # in manifest order (sorted by name); manifest.json not included
    date_from: str | None
    date_to: str | None
    published_at: str | None
    rows: int | None
    privacy: Mapping[str, Any]
    title_ja: str
    title_en: str
    description_ja: str
    description_en: str
    licenses: tuple[License, ...]
    publisher_ja: str | None
    publisher_en: str | None
    publisher_url: str | None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def file(self, name: str) -> ReleaseFile | None:
        return next((f for f in self.files if f.name == name), None)


@dataclass(frozen=True)
class ServableFile:
    """A file the API may send: where it is, its sha256 (the ETag) and size, and its Content-Type."""

    path: Path
    name: str
    sha256: str
    bytes: int
    media_type: str
    is_data: bool


def _real_dir(path: Path) -> bool:
    """A folder that is not a symlink (a symlink in the releases folder is never followed)."""
    return path.is_dir() and not path.is_symlink()


def _real_file(path: Path) -> bool:
    """A regular file that is not a symlink."""
    return path.is_file() and not path.is_symlink()


def _read_json(path: Path) -> Any:
    if not _real_file(path):
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _manifest_files(document: Any) -> tuple[ReleaseFile, ...] | None:
    """The entries of a manifest document, or None when it is not one."""
    if not isinstance(document, dict) or not isinstance(document.get("files"), list):
        return None
    files = []
    for item in document["files"]:
        if not isinstance(item, dict):
            return None
        name, size, digest = item.get("path"), item.get("bytes"), item.get("sha256")
        if not isinstance(name, str) or not isinstance(digest, str) or not isinstance(size, int):
            return None
        files.append(ReleaseFile(name, size, digest.lower(), media_type(name)))
    return tuple(files)


def _licenses(package: Mapping[str, Any]) -> tuple[License, ...]:
    found = []
    for item in package.get("licenses") or ():
        if isinstance(item, dict) and isinstance(item.get("path"), str):
            name = _text(item.get("name")) or ""
            found.append(License(name, _text(item.get("title")) or name, item["path"]))
    return tuple(found)


def _publisher(package: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(name ja, name en, homepage) of the publisher contributor, e.g. ("大田区", "Ota City", ...)."""
    for item in package.get("contributors") or ():
        if isinstance(item, dict) and "publisher" in (item.get("roles") or ()):
            title = _text(item.get("title")) or ""
            ja, _, en = title.partition(" (")
            return ja or None, en.rstrip(")") or None, _text(item.get("path"))
    return None, None, None


class ReleaseStore:
    """The releases under one folder (``Settings.releases``), read fresh on every call."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def dataset_ids(self) -> list[str]:
        """Datasets with at least one complete release, by id (withdrawn datasets are not listed)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if _real_dir(p)
            and _plain_name(p.name)
            and p.name not in WITHDRAWN_DATASETS
            and self.versions(p.name)
        )

    def versions(self, dataset: str) -> list[str]:
        """Complete versions of ``dataset`` in name order (which is date-range order); [] if unknown."""
        if not _plain_name(dataset):
            return []
        folder = self.root / dataset
        if not _real_dir(folder):
            return []
        return sorted(
            p.name
            for p in folder.iterdir()
            if _real_dir(p)
            and _plain_name(p.name)
            and p.name != LATEST
            and _real_file(p / MANIFEST)
            and _real_file(p / PROVENANCE)
        )

    def latest(self, dataset: str) -> str | None:
        """The version ``latest`` names when it is complete, else the last complete one, else None."""
        versions = self.versions(dataset)
        pointer = _read_json(self.root / dataset / LATEST) if versions else None
        named = pointer.get("version") if isinstance(pointer, dict) else None
        if isinstance(named, str) and named in versions:
            return named
        return versions[-1] if versions else None

    def resolve_version(self, dataset: str, version: str) -> str | None:
        """``version`` itself, or the version ``latest`` stands for; None when there is no such release."""
        if version == LATEST:
            return self.latest(dataset)
        return version if version in self.versions(dataset) else None

    def release(self, dataset: str, version: str) -> Release | None:
        """One release (``version`` may be ``latest``), or None when it does not exist or is unreadable."""
        resolved = self.resolve_version(dataset, version)
        if resolved is None:
            return None
        folder = self.root / dataset / resolved
        files = _manifest_files(_read_json(folder / MANIFEST))
        if files is None:
            return None
        provenance = _read_json(folder / PROVENANCE)
        provenance = provenance if isinstance(provenance, dict) else {}
        package = _read_json(folder / DATAPACKAGE)
        package = package if isinstance(package, dict) else {}
        privacy = provenance.get("privacy")
        rows = provenance.get("rows")
        publisher_ja, publisher_en, publisher_url = _publisher(package)
        return Release(
            dataset=dataset,
            version=resolved,
            folder=folder,
            files=files,
            date_from=_text(provenance.get("date_from")),
            date_to=_text(provenance.get("date_to")),
            published_at=_text(provenance.get("built_at")),
            rows=rows if isinstance(rows, int) else None,
            privacy=privacy if isinstance(privacy, dict) else {},
            title_ja=_text(package.get("title_ja")) or dataset,
            title_en=_text(package.get("title")) or dataset,
            description_ja=_text(package.get("description_ja")) or "",
            description_en=_text(package.get("description")) or "",
            licenses=_licenses(package),
            publisher_ja=publisher_ja,
            publisher_en=publisher_en,
            publisher_url=publisher_url,
        )

    def releases(self, dataset: str) -> list[Release]:
        """Every readable release of ``dataset``, oldest version name first."""
        found = (self.release(dataset, v) for v in self.versions(dataset))
        return [r for r in found if r is not None]

    def servable(self, dataset: str, version: str, name: str) -> ServableFile | None:
        """The file ``name`` of a release if the manifest lists it (or it is the manifest), else None."""
        if not (_plain_name(dataset) and _plain_name(name)):
            return None
        if not (version == LATEST or _plain_name(version)):
            return None
        release = self.release(dataset, version)
        if release is None:
            return None
        path = release.folder / name
        if not _real_file(path):  # no symlink, even to a file beside it
            return None
        if name == MANIFEST:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            return ServableFile(path, name, digest, path.stat().st_size, media_type(name), False)
        entry = release.file(name)
        if entry is None:
            return None
        return ServableFile(path, name, entry.sha256, entry.bytes, entry.media_type, entry.is_data)
