"""The release log: every version ever published, per dataset, with its days and its mode.

The release folders alone are no record of what was published: a deleted or moved folder would reopen its
days, a later release would compute them again from the current lake (late samples included) and the
two could be subtracted, and a version name could be reused for other bytes.  So the release folder keeps
an append-only log beside the datasets, ``{releases}/release-log.json`` (never served: it is a file at the
top, not a dataset; ``store.releases``), with per release its dataset, version, the JST days it covers and
its mode (``exact``, or ``dp`` for differential privacy).  ``publish.release`` consults it under the
dataset's lock:

* **A version name is never reused** (:meth:`ReleaseLog.unused_version`), even when its folder is gone.
* **A logged day whose every folder is gone is refused** (:meth:`ReleaseLog.check`): the day was published,
  its rows are public, and only those rows may be published for it again.  The error names the day, the
  release and how to restore its folder (from a backup: the manifest's sha256 sums tell the copy is true).
* **One mode per day across datasets**: a day any dataset published under differential privacy takes no
  exact release of any dataset, and a day published exactly takes no DP release: either would make the
  guarantee the DP metadata states for the day false.

Writing is two-step, around the rename of a release into place: :meth:`ReleaseLog.placing` logs the
release with its temporary folder's name, :meth:`ReleaseLog.published` marks it once the folder is final.
A process killed in between leaves a ``placing`` entry; :meth:`ReleaseLog.settle` drops it only when it is
certain nothing was published (its temporary folder is still there and its final folder is not), and
keeps it as published otherwise (the folder may have been served, then deleted).

Releases made before the log are adopted on first use (:func:`scan_releases`); a folder that appears later
(a restored one) is adopted too.  The log lives with the releases it guards: another ``--releases`` folder
is another catalogue with its own log, and copying a catalogue copies its log.  The file is JSON,
rewritten atomically under a lock (``publish._jsonfile``); it holds names and dates only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from publish._jsonfile import dataset_busy, locked, unused_version, write_atomic
from publish.errors import PublishError, ReleaseExists

LOG_NAME = "release-log.json"
MANIFEST = "manifest.json"
FORMAT = 1
EXACT, DP = "exact", "dp"
_MODE_TEXT = {EXACT: "exactly (without differential privacy)", DP: "with differential privacy"}


@dataclass(frozen=True)
class LoggedRelease:
    """One release as the log keeps it."""

    dataset: str
    version: str
    days: tuple[str, ...]  # every JST day (ISO) the release covers
    mode: str  # EXACT or DP
    state: str  # "placing" (being renamed into place) or "published"
    at: str  # UTC time it was logged (ISO 8601)
    tmp: str = ""  # the temporary folder's name while placing
    received_until: str = ""  # an adopted folder's cut (its provenance), UTC ISO 8601
    manifest_sha256: str = ""  # sha256 of its manifest.json when placed (or adopted)

    def covers(self, day: date) -> bool:
        return day.isoformat() in self.days


def log_path(releases: Path) -> Path:
    """Where the log lives: at the top of the release folder, beside the ledger and every dataset."""
    return Path(releases) / LOG_NAME


def days_of(date_from: date, date_to: date) -> tuple[str, ...]:
    return tuple((date_from + timedelta(days=i)).isoformat() for i in range((date_to - date_from).days + 1))


class ReleaseLog:
    """The append-only record of a release folder's releases (one JSON file)."""

    def __init__(self, releases: Path) -> None:
        self.releases = Path(releases)
        self.path = log_path(self.releases)

    def entries(self, dataset_id: str | None = None) -> list[LoggedRelease]:
        return [e for e in self._read() if dataset_id is None or e.dataset == dataset_id]

    def has(self, dataset_id: str, version: str) -> bool:
        return any(e.dataset == dataset_id and e.version == version for e in self._read())

    def adopt(self, found: Iterable[LoggedRelease]) -> int:
        """Add releases the log does not know yet (made before it, or restored); returns how many."""
        with locked(self.path):
            entries, cuts, found = self._read(), self._cuts(), list(found)
            known = {(e.dataset, e.version) for e in entries}
            new = [e for e in found if (e.dataset, e.version) not in known]
            sums = {(e.dataset, e.version): e.manifest_sha256 for e in found}
            backfilled = [  # entries logged before manifests were recorded: the first sight is kept
                replace(e, manifest_sha256=sums.get((e.dataset, e.version), ""))
                if not e.manifest_sha256
                else e
                for e in entries
            ]
            if backfilled != entries:
                self._write(backfilled, cuts)
                entries = backfilled
            for entry in new:
                for day in entry.days:
                    _check_adopted_mode(entries, date.fromisoformat(day), entry)
                    if entry.received_until:
                        cuts[day] = min(filter(None, (cuts.get(day), entry.received_until)), key=_instant)
                entries = [*entries, entry]
            if new:
                self._write(entries, cuts)
            return len(new)

    def cut(self, days: Iterable[date], at: datetime) -> dict[date, datetime]:
        """Each day's one cut: the ``received_until`` of the first attempt of any dataset to publish it
        (fixed here, ``at``, for days that have none yet); every dataset reads a day up to its cut."""
        with locked(self.path):
            cuts = self._cuts()
            before = len(cuts)
            fixed = {d.isoformat(): cuts.setdefault(d.isoformat(), at.isoformat()) for d in days}
            if len(cuts) != before:
                self._write(self._read(), cuts)
        return {date.fromisoformat(d): _instant(c) for d, c in fixed.items()}

    def manifest_sha256(self, dataset_id: str, version: str) -> str:
        """The sha256 of the release's manifest.json the log recorded (empty when unknown)."""
        found = [e.manifest_sha256 for e in self.entries(dataset_id) if e.version == version]
        return found[0] if found else ""

    def unused_version(self, dataset_id: str, name: str) -> str:
        """``name`` (``...-r{n}``), or the next ``-r{n}`` the log has not seen for ``dataset_id``."""
        return unused_version(name, (e.version for e in self.entries(dataset_id)))

    def check(
        self, dataset_id: str, version: str, days: Iterable[date], mode: str, present: Iterable[date]
    ) -> None:
        """Refuse a release of ``days`` in ``mode`` that the log forbids; ``present`` are the days an
        existing folder of ``dataset_id`` still holds (they are repeated from it)."""
        entries, held = self._read(), set(present)
        if any(e.dataset == dataset_id and e.version == version for e in entries):
            raise ReleaseExists(
                f"Release {dataset_id}/{version} was published before (release log {LOG_NAME}): a version "
                "name is never reused, even when its folder is gone"
            )
        for day in days:
            _check_mode(entries, day, dataset_id, mode)
            for e in entries:
                if e.covers(day) and e.dataset == dataset_id and day not in held:
                    raise PublishError(_gone(day, e, self.releases))

    def placing(
        self, dataset_id: str, version: str, days: Iterable[str], mode: str, tmp: str, manifest: str = ""
    ) -> None:
        """Log a release about to be renamed into place from its temporary folder ``tmp`` (checking the
        mode of its days again, against releases of other datasets made meanwhile), with the sha256 of
        its manifest.json (``manifest``)."""
        entry = LoggedRelease(
            dataset_id, version, tuple(days), mode, "placing", _now(), tmp, manifest_sha256=manifest
        )
        with locked(self.path):
            entries = self._read()
            for day in entry.days:
                _check_mode(entries, date.fromisoformat(day), dataset_id, mode)
            self._write([*entries, entry])

    def published(self, dataset_id: str, version: str) -> None:
        """Mark a release final (its folder is in place)."""
        self._update(dataset_id, version, lambda e: replace(e, state="published", tmp=""))

    def forget(self, dataset_id: str, version: str) -> None:
        """Drop a ``placing`` entry whose rename did not happen (this process failed before it)."""
        self._update(dataset_id, version, lambda e: None if e.state == "placing" else e)

    def settle(self, busy: Callable[[str], bool]) -> None:
        """Resolve ``placing`` entries left by killed processes (those of datasets nobody is publishing,
        ``busy(dataset)`` False): dropped when the rename certainly did not happen, else published."""
        with locked(self.path):
            entries = self._read()
            settled = [_settled(e, self.releases) if e.state == "placing" and not busy(e.dataset) else e
                       for e in entries]  # fmt: skip
            kept = [e for e in settled if e is not None]
            if kept != entries:
                self._write(kept)

    def _update(self, dataset_id: str, version: str, change: Callable[[LoggedRelease], Any]) -> None:
        with locked(self.path):
            entries = self._read()
            out = [change(e) if (e.dataset, e.version) == (dataset_id, version) else e for e in entries]
            self._write([e for e in out if e is not None])

    def _raw(self) -> dict[str, Any]:
        try:
            raw: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"format": FORMAT, "releases": []}
        except (OSError, ValueError) as exc:
            raise PublishError(f"The release log {LOG_NAME} cannot be read: {exc}") from exc
        if raw.get("format") != FORMAT or not isinstance(raw.get("releases"), list):
            raise PublishError(f"The release log {LOG_NAME} is not a format-{FORMAT} release log")
        return raw

    def _cuts(self) -> dict[str, str]:
        cuts = self._raw().get("cuts") or {}
        if not isinstance(cuts, dict):
            raise PublishError(f"The release log {LOG_NAME} has malformed day cuts")
        return {str(k): str(v) for k, v in cuts.items()}

    def _read(self) -> list[LoggedRelease]:
        raw = self._raw()
        try:
            return [LoggedRelease(**{**item, "days": tuple(item["days"])}) for item in raw["releases"]]
        except (TypeError, KeyError) as exc:
            raise PublishError(f"The release log {LOG_NAME} has a malformed entry: {exc}") from exc

    def _write(self, entries: list[LoggedRelease], cuts: Mapping[str, str] | None = None) -> None:
        kept = dict(sorted((self._cuts() if cuts is None else cuts).items()))
        write_atomic(self.path, {"format": FORMAT, "releases": [asdict(e) for e in entries], "cuts": kept})


def _instant(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _settled(entry: LoggedRelease, releases: Path) -> LoggedRelease | None:
    folder = releases / entry.dataset
    if not (folder / entry.version).exists() and entry.tmp and (folder / entry.tmp).is_dir():
        return None  # still in its temporary folder: never renamed, never seen
    return replace(entry, state="published", tmp="")


def _check_mode(entries: list[LoggedRelease], day: date, dataset_id: str, mode: str) -> None:
    for e in entries:
        if e.covers(day) and e.mode != mode:
            raise PublishError(_mixed_modes(day, e, dataset_id, mode))


def _check_adopted_mode(entries: list[LoggedRelease], day: date, found: LoggedRelease) -> None:
    for e in entries:
        if e.covers(day) and e.mode != found.mode:
            raise PublishError(
                f"Release folder {found.dataset}/{found.version} was published {_MODE_TEXT[found.mode]}, "
                f"but {day} was published {_MODE_TEXT[e.mode]} by {e.dataset} {e.version} (release log "
                f"{LOG_NAME}): a day takes one mode for every dataset, so the folder is not adopted; "
                "remove it from the release folder (it belongs to another catalogue)"
            )


def _gone(day: date, entry: LoggedRelease, releases: Path) -> str:
    return (
        f"{day} was published by {entry.dataset} {entry.version}, whose folder is gone from "
        f"{releases.name}/{entry.dataset}/ (release log {LOG_NAME}): a day is published once, and building "
        "it again from the lake would differ by what arrived since. Restore the folder from a backup (its "
        "manifest.json sha256 sums check the copy) and publish again, or publish a range without that day"
    )


def _mixed_modes(day: date, entry: LoggedRelease, dataset_id: str, mode: str) -> str:
    if entry.mode == DP:
        advice = "publish it with dp_epsilon set (as that release was), or a range without that day"
    else:
        advice = "publish it without dp_epsilon (as that release was), or a range without that day"
    return (
        f"{day} was published {_MODE_TEXT[entry.mode]} by {entry.dataset} {entry.version}: a day takes "
        f"one mode for every dataset, so {dataset_id} may not publish it {_MODE_TEXT[mode]}: the "
        f"differential-privacy guarantee stated for the day would not hold; {advice}"
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def open_log(releases: Path, dataset_id: str, provenance: str = "provenance.json") -> ReleaseLog:
    """The log of ``releases`` for a publish of ``dataset_id`` (whose lock the caller holds): settled
    (entries left by killed publishes) and with every release folder in it (made before the log, or
    restored)."""
    log = ReleaseLog(releases)
    log.settle(lambda other: other != dataset_id and dataset_busy(releases, other))
    log.adopt(scan_releases(releases, provenance))
    return log


def scan_releases(releases: Path, provenance: str = "provenance.json") -> list[LoggedRelease]:
    """Every complete release folder under ``releases`` as a log entry (for :meth:`ReleaseLog.adopt`)."""
    found = []
    for path in sorted(Path(releases).glob(f"*/*/{provenance}")):
        folder = path.parent
        if folder.name.startswith(".") or folder.parent.name.startswith("."):
            continue
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            first, last = date.fromisoformat(meta["date_from"]), date.fromisoformat(meta["date_to"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PublishError(
                f"Cannot read the date range of release {folder.parent.name}/{folder.name}: {exc}"
            ) from exc
        mode = DP if _is_dp(meta) else EXACT
        cut = str(meta.get("received_until") or meta.get("built_at") or "")
        found.append(
            LoggedRelease(
                folder.parent.name,
                folder.name,
                days_of(first, last),
                mode,
                "published",
                _now(),
                received_until=cut,
                manifest_sha256=file_sha256(folder / MANIFEST),
            )
        )
    return found


def file_sha256(path: Path) -> str:
    """The sha256 of a file (empty when it is missing)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return ""


def _is_dp(provenance: Mapping[str, Any]) -> bool:
    parameters = provenance.get("parameters") or {}
    privacy = provenance.get("privacy") or {}
    return parameters.get("dp_epsilon") is not None or privacy.get("epsilon") is not None
