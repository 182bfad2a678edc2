"""CKAN: a ``package_create``-ready JSON of a release, and an optional push to a CKAN portal.

``ckan_package.json`` follows CKAN's core schema (name, title, notes, version, license_id, tags, extras,
resources) plus ``extras`` that ckanext-spatial and ckanext-dcat read (``spatial`` GeoJSON,
``temporal_start``/``temporal_end``).  CKAN has no bilingual title, so title and notes hold Japanese then
English.  ``license_id`` is ``cc-by`` (CKAN's built-in CC BY 4.0 entry, so portals show a known license);
the license of record, 公共データ利用規約 (PDL 1.0), is named by URL in ``extras`` and the notes.

:func:`push_to_ckan` creates the package (or updates it when the name exists: its resources are then
replaced by this release's files) and uploads every file with ``resource_create``.  The API key travels
only in the ``Authorization`` header (ckanapi); it never appears in a log line or an error message.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import ckanapi
import requests

from publish.dcat import release_url
from publish.errors import PublishError
from publish.manifest import FileEntry, privacy_parameters, privacy_summary
from publish.model import BuiltDataset
from publish.publisher import COMPATIBLE_LICENSES, LICENSE, LICENSE_NOTE_EN, LICENSE_NOTE_JA, OTA_CITY

CKAN_NAME = "ckan_package.json"
CKAN_LICENSE_ID = "cc-by"
PACKAGE_PREFIX = "ota-corridor-"
USER_AGENT = "corridorhub-publish (ckanapi)"
_TAG = re.compile(r"[\w .-]{2,100}")
_FORMATS = {
    ".parquet": "Parquet",
    ".csv": "CSV",
    ".geojson": "GeoJSON",
    ".json": "JSON",
    ".jsonld": "JSON-LD",
    ".md": "Markdown",
}

log = logging.getLogger(__name__)


class CkanError(PublishError):
    """The CKAN portal could not be reached or refused the push; the message says which call and why."""


def package_name(dataset_id: str) -> str:
    """The CKAN package name (URL slug) of a dataset: lowercase, 2-100 of ``a-z0-9-_``."""
    return PACKAGE_PREFIX + re.sub(r"[^a-z0-9_-]", "-", dataset_id.lower())


def _extras(built: BuiltDataset, version: str) -> list[dict[str, str]]:
    spec = built.spec
    extras = {
        "dataset_id": spec.id,
        "publisher_name": f"{OTA_CITY.name_ja} ({OTA_CITY.name_en})",
        "publisher_local_government_code": OTA_CITY.local_government_code,
        "license_url": LICENSE.url,
        "compatible_license_url": " ".join(lic.url for lic in COMPATIBLE_LICENSES),
        "temporal_start": built.date_from.isoformat(),
        "temporal_end": built.date_to.isoformat(),
        "temporal_resolution": spec.time_resolution,
        "release_version": version,
        "privacy": json.dumps(privacy_parameters(built), ensure_ascii=False, sort_keys=True),
    }
    if built.bbox is not None:
        west, south, east, north = built.bbox
        ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
        extras["spatial"] = json.dumps({"type": "Polygon", "coordinates": [ring]})
    if spec.spatial and spec.mesh_level is not None:
        extras["jis_mesh_level"] = str(spec.mesh_level)
    return [{"key": k, "value": v} for k, v in extras.items()]


def ckan_package(
    built: BuiltDataset,
    version: str,
    files: dict[str, FileEntry],
    titles: dict[str, tuple[str, str]],
    *,
    base_url: str | None = None,
    owner_org: str | None = None,
) -> dict[str, Any]:
    """The ``package_create`` body.  Resource URLs are the public download URLs with ``base_url``, else
    empty (a push uploads the files and CKAN fills them in)."""
    spec = built.spec
    note_ja, note_en = privacy_summary(built)
    prefix = release_url(base_url, spec.id, version)
    keywords = dict.fromkeys([*spec.keywords_ja, *spec.keywords_en])
    package: dict[str, Any] = {
        "name": package_name(spec.id),
        "title": f"{spec.title_ja} / {spec.title_en}",
        "notes": "\n\n".join(
            [spec.description_ja, note_ja, LICENSE_NOTE_JA, spec.description_en, note_en, LICENSE_NOTE_EN]
        ),
        "version": version,
        "license_id": CKAN_LICENSE_ID,
        "author": f"{OTA_CITY.name_ja} ({OTA_CITY.name_en})",
        "url": base_url.rstrip("/") + "/" if base_url else OTA_CITY.homepage,
        "tags": [{"name": k} for k in keywords if _TAG.fullmatch(k)],
        "extras": _extras(built, version),
        "resources": [
            {
                "name": name,
                "description": f"{titles[name][0]} / {titles[name][1]}",
                "format": _FORMATS.get("." + name.rsplit(".", 1)[-1], ""),
                "mimetype": entry.media_type,
                "size": entry.bytes,
                "hash": f"sha256:{entry.sha256}",
                "url": prefix + name if prefix else "",
            }
            for name, entry in files.items()
        ],
    }
    if owner_org is not None:
        package["owner_org"] = owner_org
    return package


def push_to_ckan(
    package: dict[str, Any],
    files: Sequence[Path],
    url: str,
    api_key: str | None,
    *,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Create or update ``package`` on the CKAN portal at ``url`` and upload ``files`` as its resources.

    Returns the package as the portal shows it afterwards.  Raises :class:`CkanError` (never echoing
    the API key) when the portal cannot be reached, refuses the key, or rejects the metadata.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CkanError(f"Setting 'ckan_url' must be an http(s) URL of a CKAN portal, got {url!r}")
    if not api_key:
        raise CkanError("Setting 'ckan_api_key' is missing: a CKAN push needs an API token")
    body = {k: v for k, v in package.items() if k != "resources"}
    described = {r["name"]: r for r in package.get("resources", [])}
    with ckanapi.RemoteCKAN(url, apikey=api_key, user_agent=USER_AGENT) as portal:
        call = _Caller(portal, url, api_key, timeout_s)
        try:
            existing = call("package_show", {"id": body["name"]})
        except ckanapi.NotFound:
            existing = None
        if existing is None:
            log.info("CKAN %s: creating package %s", url, body["name"])
            target = call("package_create", body)
        else:
            log.info("CKAN %s: updating package %s (resources replaced)", url, body["name"])
            target = call("package_update", {**body, "id": existing["id"], "resources": []})
        for path in files:
            fields = {k: v for k, v in described.get(path.name, {"name": path.name}).items() if k != "url"}
            with path.open("rb") as upload:
                call("resource_create", {"package_id": target["id"], **fields}, files={"upload": upload})
            log.info("CKAN %s: uploaded %s", url, path.name)
        try:
            shown: dict[str, Any] = call("package_show", {"id": target["id"]})
        except ckanapi.NotFound:
            raise CkanError(f"CKAN at {url} lost package {body['name']} right after the push") from None
        return shown


class _Caller:
    """Calls one CKAN action and turns every failure into a CkanError that never holds the API key
    (``NotFound`` passes through: package_show uses it to tell create from update)."""

    def __init__(self, portal: ckanapi.RemoteCKAN, url: str, api_key: str, timeout_s: float) -> None:
        self._portal = portal
        self._url = url
        self._api_key = api_key
        self._timeout_s = timeout_s

    def _error(self, text: str) -> CkanError:
        return CkanError(text.replace(self._api_key, "***"))

    def __call__(self, action: str, data: dict[str, Any], files: dict[str, IO[bytes]] | None = None) -> Any:
        url = self._url
        try:
            return self._portal.call_action(
                action, data, files=files, requests_kwargs={"timeout": self._timeout_s}
            )
        except ckanapi.NotFound:
            raise
        except ckanapi.NotAuthorized as exc:
            raise self._error(f"CKAN at {url} refused {action}: not authorized ({exc})") from None
        except ckanapi.ValidationError as exc:
            raise self._error(f"CKAN at {url} rejected {action}: {exc.error_dict}") from None
        except ckanapi.CKANAPIError as exc:
            raise self._error(f"CKAN at {url} failed {action}: {exc}") from None
        except requests.RequestException as exc:
            raise self._error(f"Cannot reach CKAN at {url} ({action}): {type(exc).__name__}") from None
