"""Who publishes the open datasets and under which license: one place for every metadata format.

DESIGN.md: the publisher is Ota City (大田区), local government code 131113 (全国地方公共団体コード,
with its check digit); the license is 公共データ利用規約 (第1.0版) (PDL 1.0), which is compatible with
CC BY 4.0.  Licenses are always given by URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta, timezone

JST = timezone(timedelta(hours=9), "JST")  # Japan has no daylight saving time: always +09:00


@dataclass(frozen=True)
class License:
    id: str  # SPDX-style short id
    title: str
    url: str


PDL_1_0 = License(
    id="PDL-1.0",
    title="公共データ利用規約 (第1.0版) / Public Data License (Version 1.0)",
    url="https://www.digital.go.jp/resources/open_data/public_data_license_v1.0",
)
CC_BY_4_0 = License(
    id="CC-BY-4.0",
    title="Creative Commons Attribution 4.0 International",
    url="https://creativecommons.org/licenses/by/4.0/",
)
LICENSE = PDL_1_0
COMPATIBLE_LICENSES = (CC_BY_4_0,)
LICENSE_NOTE_JA = "公共データ利用規約 (第1.0版) (PDL 1.0) の下で提供します。CC BY 4.0 と互換性があります。"
LICENSE_NOTE_EN = "Published under the Public Data License 1.0 (PDL 1.0), compatible with CC BY 4.0."


@dataclass(frozen=True)
class Publisher:
    name_ja: str
    name_en: str
    local_government_code: str
    homepage: str


OTA_CITY = Publisher(
    name_ja="大田区",
    name_en="Ota City",
    local_government_code="131113",
    homepage="https://www.city.ota.tokyo.jp/",
)

SPATIAL_LABEL_JA = "東京都大田区 羽田・蒲田 5G コリドー"
SPATIAL_LABEL_EN = "Haneda-Kamata 5G corridor, Ota City, Tokyo"

# Media types (IANA) and EU file-type authority codes, by file suffix.
MEDIA_TYPES = {
    ".parquet": "application/vnd.apache.parquet",
    ".csv": "text/csv",
    ".geojson": "application/geo+json",
    ".json": "application/json",
    ".jsonld": "application/ld+json",
    ".md": "text/markdown",
}
FILE_TYPES = {
    ".parquet": "PARQUET",
    ".csv": "CSV",
    ".geojson": "GEOJSON",
    ".json": "JSON",
    ".jsonld": "JSON_LD",
    ".md": "TXT",
}
