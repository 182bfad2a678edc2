"""``dcat.jsonld``: the release described in DCAT (DCAT-AP 3.0) as JSON-LD.

One ``dcat:Dataset`` (the release) with a ``dcat:Distribution`` per release file written before it:
titles and descriptions in Japanese and English (language-tagged), keywords in both languages, Ota City
as publisher (``foaf:Agent`` with ``foaf:name`` and the local government code as ``dct:identifier``),
``dct:spatial`` (a ``dct:Location`` with WKT bbox and centroid), ``dct:temporal`` (a
``dct:PeriodOfTime`` with ``dcat:startDate``/``dcat:endDate``, JST dates), ``dct:license`` by URL, and per
distribution its access/download URL, media type, format, size and sha256 checksum.

IRIs: with ``base_url`` every file is ``{base_url}/v1/datasets/{id}/releases/{version}/{file}`` (the
public route of the HTTP service); without it they are relative references, which resolve against the
location of ``dcat.jsonld`` itself (as JSON-LD prescribes), so the folder is self-describing wherever it
is copied.  Publisher, location, period and checksums are blank nodes.

The privacy parameters applied are stated twice: as a sentence closing each description (for people and
portals that only show text) and as ``chub:privacyParameters``, an ``rdf:JSON`` literal holding
``PrivacyReport.as_dict()`` (extension namespace ``chub:`` = ``urn:corridorhub:ns:``; DCAT-AP shapes are
open, extra properties are allowed).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from publish.manifest import FileEntry, privacy_parameters, privacy_summary
from publish.model import BuiltDataset
from publish.publisher import FILE_TYPES, LICENSE, OTA_CITY, SPATIAL_LABEL_EN, SPATIAL_LABEL_JA
from store.geo.mesh import NOMINAL_SIZE_M

DCAT_NAME = "dcat.jsonld"
CONTEXT = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "skos": "http://www.w3.org/2004/02/skos/core#",
    "spdx": "http://spdx.org/rdf/terms#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "gsp": "http://www.opengis.net/ont/geosparql#",
    "chub": "urn:corridorhub:ns:",
}
EU_AUTHORITY = "http://publications.europa.eu/resource/authority/"
IANA_MEDIA_TYPES = "https://www.iana.org/assignments/media-types/"
LOCAL_AUTHORITY = "http://purl.org/adms/publishertype/LocalAuthority"


def release_url(base_url: str | None, dataset_id: str, version: str) -> str:
    """The URL prefix of the release's files, or ``""`` (relative references) without a base URL."""
    if base_url is None:
        return ""
    return f"{base_url.rstrip('/')}/v1/datasets/{dataset_id}/releases/{version}/"


def _text(ja: str, en: str) -> list[dict[str, str]]:
    return [{"@value": ja, "@language": "ja"}, {"@value": en, "@language": "en"}]


def _typed(value: str, datatype: str) -> dict[str, str]:
    return {"@value": value, "@type": datatype}


def _wkt_polygon(bbox: tuple[float, float, float, float]) -> str:
    west, south, east, north = bbox
    ring = [(west, south), (east, south), (east, north), (west, north), (west, south)]
    return "POLYGON((" + ", ".join(f"{x!r} {y!r}" for x, y in ring) + "))"


def _location(bbox: tuple[float, float, float, float] | None) -> dict[str, Any]:
    location: dict[str, Any] = {
        "@id": "_:spatial",
        "@type": "dct:Location",
        "skos:prefLabel": _text(SPATIAL_LABEL_JA, SPATIAL_LABEL_EN),
    }
    if bbox is not None:
        west, south, east, north = bbox
        location["dcat:bbox"] = _typed(_wkt_polygon(bbox), "gsp:wktLiteral")
        location["dcat:centroid"] = _typed(
            f"POINT({(west + east) / 2!r} {(south + north) / 2!r})", "gsp:wktLiteral"
        )
    return location


def _publisher() -> dict[str, Any]:
    return {
        "@id": "_:publisher",
        "@type": "foaf:Agent",
        "foaf:name": _text(OTA_CITY.name_ja, OTA_CITY.name_en),
        "dct:identifier": OTA_CITY.local_government_code,
        "dct:type": {"@id": LOCAL_AUTHORITY},
        "foaf:homepage": {"@id": OTA_CITY.homepage},
    }


def _distribution(
    entry: FileEntry, prefix: str, titles: tuple[str, str], issued: dict[str, str] | None
) -> dict[str, Any]:
    url = prefix + entry.name
    suffix = "." + entry.name.rsplit(".", 1)[-1]
    distribution: dict[str, Any] = {
        "@id": f"{prefix}{DCAT_NAME}#{entry.name}",
        "@type": "dcat:Distribution",
        "dct:title": _text(*titles),
        "dcat:accessURL": {"@id": url},
        "dcat:downloadURL": {"@id": url},
        "dcat:mediaType": {"@id": IANA_MEDIA_TYPES + entry.media_type},
        "dcat:byteSize": _typed(str(entry.bytes), "xsd:nonNegativeInteger"),
        "spdx:checksum": {
            "@type": "spdx:Checksum",
            "spdx:algorithm": {"@id": "spdx:checksumAlgorithm_sha256"},
            "spdx:checksumValue": _typed(entry.sha256, "xsd:hexBinary"),
        },
        "dct:license": {"@id": LICENSE.url},
    }
    if suffix in FILE_TYPES:
        distribution["dct:format"] = {"@id": f"{EU_AUTHORITY}file-type/{FILE_TYPES[suffix]}"}
    if issued is not None:
        distribution["dct:issued"] = issued
    return distribution


def dcat_document(
    built: BuiltDataset,
    version: str,
    files: dict[str, FileEntry],
    titles: dict[str, tuple[str, str]],
    *,
    base_url: str | None = None,
    built_at: datetime | None = None,
    page: str | None = None,
) -> dict[str, Any]:
    """The JSON-LD document.  ``files`` are the release files to describe (by name), ``titles`` their
    (ja, en) titles; ``page`` names the file that documents the dataset (the data dictionary)."""
    spec = built.spec
    prefix = release_url(base_url, spec.id, version)
    issued = _typed(built_at.isoformat(), "xsd:dateTime") if built_at is not None else None
    note_ja, note_en = privacy_summary(built)
    dataset: dict[str, Any] = {
        "@id": f"{prefix}{DCAT_NAME}#dataset",
        "@type": "dcat:Dataset",
        "dct:identifier": f"{spec.id}/{version}",
        "dct:title": _text(spec.title_ja, spec.title_en),
        "dct:description": _text(
            f"{spec.description_ja}\n\n{note_ja}", f"{spec.description_en}\n\n{note_en}"
        ),
        "dcat:keyword": [
            *({"@value": k, "@language": "ja"} for k in spec.keywords_ja),
            *({"@value": k, "@language": "en"} for k in spec.keywords_en),
        ],
        "dcat:version": version,
        "dct:publisher": _publisher(),
        "dct:license": {"@id": LICENSE.url, "@type": "dct:LicenseDocument"},
        "dct:accessRights": {"@id": f"{EU_AUTHORITY}access-right/PUBLIC"},
        "dct:language": [{"@id": f"{EU_AUTHORITY}language/JPN"}, {"@id": f"{EU_AUTHORITY}language/ENG"}],
        "dct:spatial": _location(built.bbox),
        "dct:temporal": {
            "@id": "_:temporal",
            "@type": "dct:PeriodOfTime",
            "dcat:startDate": _typed(built.date_from.isoformat(), "xsd:date"),
            "dcat:endDate": _typed(built.date_to.isoformat(), "xsd:date"),
        },
        "dcat:temporalResolution": _typed(spec.time_resolution, "xsd:duration"),
    }
    if spec.spatial and spec.mesh_level in NOMINAL_SIZE_M:
        dataset["dcat:spatialResolutionInMeters"] = _typed(
            str(NOMINAL_SIZE_M[spec.mesh_level]), "xsd:decimal"
        )
    if issued is not None:
        dataset["dct:issued"] = issued
        dataset["dct:modified"] = issued
    if base_url is not None:
        dataset["dcat:landingPage"] = {"@id": base_url.rstrip("/") + "/"}
    if page is not None:
        dataset["foaf:page"] = {"@id": prefix + page}
    dataset["dcat:distribution"] = [
        _distribution(entry, prefix, titles[name], issued) for name, entry in files.items()
    ]
    dataset["chub:privacyParameters"] = {"@type": "@json", "@value": privacy_parameters(built)}
    return {"@context": CONTEXT, "@graph": [dataset]}
