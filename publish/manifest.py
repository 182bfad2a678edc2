"""What a release holds, checkably: sha256 and size of every file, and the privacy parameters applied.

``manifest.json`` is written last and lists every other file of the release folder (sorted by name).
``privacy.json`` states the privacy parameters actually applied (``PrivacyReport.as_dict()``): the same
object is embedded in ``datapackage.json`` and in the DCAT metadata.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from publish.model import BuiltDataset
from publish.publisher import MEDIA_TYPES

MANIFEST_NAME = "manifest.json"
PRIVACY_NAME = "privacy.json"


@dataclass(frozen=True)
class FileEntry:
    """One file of a release, as listed in the manifest and the metadata."""

    name: str
    bytes: int
    sha256: str
    media_type: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.name, "bytes": self.bytes, "sha256": self.sha256, "mediatype": self.media_type}


def describe_file(path: Path) -> FileEntry:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return FileEntry(
        path.name, size, digest.hexdigest(), MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    )


def json_value(value: Any) -> Any:
    """``value`` as plain JSON: dates in ISO 8601, tuples and sets as (sorted) lists, no NaN."""
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(json_value(v) for v in value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Path):
        return value.as_posix()
    return str(value)


def dump_json(document: Any) -> str:
    """The one JSON text form of the release: UTF-8, two-space indent, key order kept, final newline."""
    return json.dumps(json_value(document), ensure_ascii=False, indent=2, allow_nan=False) + "\n"


def privacy_parameters(built: BuiltDataset) -> dict[str, Any]:
    """The privacy parameters actually applied, as written in every metadata file."""
    parameters: dict[str, Any] = json_value(built.privacy.as_dict())
    return parameters


def privacy_summary(built: BuiltDataset) -> tuple[str, str]:
    """One sentence each in Japanese and English stating the privacy protection applied."""
    p = built.privacy
    suppressed = p.cells_suppressed_k + p.cells_suppressed_dominance + p.cells_suppressed_complementary
    ja = (
        f"プライバシー保護: 各セルは {p.k} 台以上の異なる端末から集計し、一事業者の寄与が "
        f"{p.dominance_share:.0%} を超えるセルは秘匿。時間は {p.time_coarsening}、空間は "
        f"{p.space_coarsening} に粗視化。秘匿セル {suppressed} 件 (k 未満 {p.cells_suppressed_k}、"
        f"寄与率 {p.cells_suppressed_dominance}、補完秘匿 {p.cells_suppressed_complementary})。"
    )
    en = (
        f"Privacy: every published cell aggregates at least {p.k} distinct devices; cells where one "
        f"operator contributes more than {p.dominance_share:.0%} are suppressed; time coarsened to "
        f"{p.time_coarsening}, space to {p.space_coarsening}; {suppressed} cells suppressed "
        f"({p.cells_suppressed_k} under k, {p.cells_suppressed_dominance} dominance, "
        f"{p.cells_suppressed_complementary} complementary)."
    )
    if p.epsilon is not None:
        return _dp_summary(built)
    return ja, en


def _dp_summary(built: BuiltDataset) -> tuple[str, str]:
    """Under differential privacy: the guarantee it gives, and no more (docs/PRIVACY.md)."""
    p = built.privacy
    dp = p.extra.get("differential_privacy", {})
    threshold = dp.get("publication_threshold", p.k)
    delta = f", δ = {p.delta:g}" if p.delta is not None else ""
    ja = (
        f"プライバシー保護: 端末・日単位の差分プライバシー (このデータセット ε = {p.epsilon:g}{delta}。"
        "全データセット・全版の合計は予算台帳で上限管理)。ノイズを加えた端末数が "
        f"{threshold} 以上 (k = {p.k}) で、ノイズを加えた事業者別端末数で一事業者が "
        f"{p.dominance_share:.0%} を超えないセルのみ公開。時間は {p.time_coarsening}、空間は "
        f"{p.space_coarsening} に粗視化。事業者の車両群全体は保護対象外、事業者一覧は公開情報。"
    )
    en = (
        f"Privacy: differential privacy per device-day (ε = {p.epsilon:g}{delta} for this dataset; the "
        "total over all datasets and releases is bounded by the budget ledger); a cell is published when "
        f"its noisy device count is at least {threshold} (k = {p.k}) and no operator holds more than "
        f"{p.dominance_share:.0%} of its noisy device counts; time coarsened to {p.time_coarsening}, space "
        f"to {p.space_coarsening}. An operator's fleet as a whole is not protected; the operator list is "
        "public."
    )
    return ja, en


def privacy_document(built: BuiltDataset, version: str) -> dict[str, Any]:
    return {
        "dataset": built.spec.id,
        "version": version,
        "date_from": built.date_from.isoformat(),
        "date_to": built.date_to.isoformat(),
        "privacy": privacy_parameters(built),
    }


def write_privacy(built: BuiltDataset, version: str, path: Path) -> None:
    path.write_text(dump_json(privacy_document(built, version)), encoding="utf-8")


def write_manifest(folder: Path, dataset_id: str, version: str) -> list[FileEntry]:
    """Write ``manifest.json`` listing every other file in ``folder``; returns the entries."""
    entries = [describe_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_NAME]
    document = {
        "dataset": dataset_id,
        "version": version,
        "algorithm": "sha256",
        "files": [e.as_dict() for e in entries],
    }
    (folder / MANIFEST_NAME).write_text(dump_json(document), encoding="utf-8")
    return entries


def read_manifest(folder: Path) -> dict[str, FileEntry]:
    """The manifest's entries by file name (for checking a release and serving its files)."""
    document = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    return {
        item["path"]: FileEntry(item["path"], int(item["bytes"]), item["sha256"], item["mediatype"])
        for item in document["files"]
    }
