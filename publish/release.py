"""Releases: immutable, versioned folders ``{releases}/{dataset}/{version}/`` and a ``latest`` pointer.

:func:`publish_release` builds a dataset, runs the privacy gate, writes the files (``publish.export``) and
``provenance.json`` (listed in ``manifest.json``
with the others) into a hidden temporary folder next to the final one, then renames it into place in one
step and replaces ``latest``.  A failing gate or any error removes the temporary folder: no partial release
is ever visible.  One publish per dataset at a time (a lock file, ``.lock``): a release must see every
earlier release of its dataset.

Version names: ``{date_from}_{date_to}-r{n}`` (JST dates), ``n`` = 1, 2, ... per range, e.g.
``2025-03-14_2025-03-14-r1``.  They sort by range, say what they cover and never collide; a version is
never overwritten (``ReleaseExists``) and a name is never used twice, even after its folder is gone: the
release log ``{releases}/release-log.json`` (``publish.release_log``) records every release, is written
just before the rename (and marked after it), and refuses a day whose folders are gone or whose mode
(exact or DP) differs from another dataset's release of it.  ``latest`` is a small JSON file (not a
symlink: it downloads and copies as what it is) naming the version published last.

Rebuilding from the Delta versions the hub keeps for the release (``publish.source.record_source_versions``,
not published) as ``at_versions`` gives the same bytes for the
data files: queries round and sort deterministically and the data files hold no build time.

**Differential privacy** (``dp_epsilon`` set, for the datasets with a plan in ``publish.noise``): the
release charges its dataset's share of ``dp_epsilon`` (per device-day) on each day it publishes first to
the one ledger of the release folder (``publish.ledger``), with ``ledger.spending(...)`` around build,
gate, writing and the rename: the budget is reserved before any work (an exhausted budget fails at once,
leaving nothing), marked drawn when the build starts (from then on any outcome, nothing publishable or a
failure included, depends on the noise and is charged) and committed once the folder is in place; only a
failure before the build gives it back.  Charges left by a killed publish are settled first: given back
only when certainly nothing was published (never drawn, no folder, not in the release log).
OpenDP's noise cannot be seeded, so a DP release cannot be rebuilt: a rebuild
(``at_versions``) is refused, and the stored folder, checked by its manifest, is the release's only form.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from publish import gate
from publish.build import build_dataset, check_preconditions, check_range
from publish.closure import (
    check_closed,
    days_between,
    late_samples,
    privacy_zones_sha256,
    record_late,
    rule_differences,
    rules_of,
)
from publish.datasets import dataset_entry
from publish.errors import GateFailed, NothingPublishable, PublishError, ReleaseExists
from publish.export import write_release
from publish.ledger import (
    LedgerEntry,
    PrivacyLedger,
    check_charges_known,
    ledger_path,
    legacy_entries,
    release_placed,
    released_entries,
)
from publish.manifest import write_manifest
from publish.model import BuiltDataset, PrivacyReport
from publish.noise import dp_plan
from publish.previous import PROVENANCE, check_intact, read_earlier, release_folders
from publish.release_log import DP, EXACT, MANIFEST, ReleaseLog, days_of, file_sha256, open_log
from publish.source import record_source_versions
from store.lake import Lake
from store.settings import Settings

LATEST = "latest"
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
Progress = Callable[[int, int, str], None]
STEPS = ("building", "privacy gate", "writing files", "finalizing")


@dataclass(frozen=True)
class ReleaseResult:
    dataset_id: str
    version: str
    folder: Path
    files: list[Path]
    rows: int
    privacy: PrivacyReport
    source_versions: dict[str, int]
    days_repeated: list[date] = field(default_factory=list)  # published before: their rows repeated
    late_samples: dict[date, int] = field(default_factory=dict)  # received after those days' release

    def describe(self) -> str:
        p = self.privacy
        suppressed = p.cells_suppressed_k + p.cells_suppressed_dominance + p.cells_suppressed_complementary
        fresh = p.cells_before - int(p.extra.get("cells_suppressed_earlier_releases", 0))
        private = ""
        if p.epsilon is not None:
            budget = p.extra.get("privacy_budget", {})
            threshold = p.extra.get("differential_privacy", {}).get("publication_threshold", p.k)
            private = (
                f", differential privacy ε={p.epsilon:g} δ={p.delta:g} per device-day, noisy device "
                f"count at least {threshold} (budget: the days "
                f"have spent at most {budget.get('max_spent_epsilon', 0):g} of "
                f"{budget.get('budget_epsilon_per_device_day', 0):g}, all datasets)"
            )
        counts = (
            f"{suppressed} of {fresh} cells suppressed (k={p.k}, dominance {p.dominance_share:g}{private})"
            if fresh
            else "every day of it published before"
        )
        line = f"{self.dataset_id} {self.version}: {self.rows} rows, {counts} -> {self.folder}"
        if self.days_repeated:
            late = sum(self.late_samples.values())
            line += (
                f"\n  {len(self.days_repeated)} day(s) published before, repeated as they were "
                f"({', '.join(d.isoformat() for d in self.days_repeated)}); {late} sample(s) of them "
                "arrived after and are never published (counted in <lake>/_hub/publish/late-data.json)"
            )
        return line


def code_version() -> str:
    try:
        return metadata.version("corridorhub")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def next_version(dataset_dir: Path, date_from: date, date_to: date) -> str:
    stem = f"{date_from.isoformat()}_{date_to.isoformat()}-r"
    taken = [
        int(p.name[len(stem) :])
        for p in release_folders(dataset_dir)
        if p.name.startswith(stem) and p.name[len(stem) :].isdigit()
    ]
    return f"{stem}{max(taken, default=0) + 1}"


def latest_version(releases: Path, dataset_id: str) -> str | None:
    """The version ``latest`` names, or None before the first release."""
    try:
        pointer = json.loads((Path(releases) / dataset_id / LATEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    version = pointer.get("version")
    return version if isinstance(version, str) else None


def list_versions(releases: Path, dataset_id: str) -> list[str]:
    """Every complete version of a dataset (those with a provenance file), in name order."""
    return [p.name for p in release_folders(Path(releases) / dataset_id) if (p / PROVENANCE).is_file()]


@contextlib.contextmanager
def _dataset_lock(dataset_dir: Path) -> Iterator[None]:
    dataset_dir.mkdir(parents=True, exist_ok=True)
    with open(dataset_dir / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(
            json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def provenance(built: BuiltDataset, version: str, built_at: datetime) -> dict[str, Any]:
    return {
        "dataset": built.spec.id,
        "version": version,
        "date_from": built.date_from.isoformat(),
        "date_to": built.date_to.isoformat(),
        "timezone": "Asia/Tokyo",
        "received_until": built.parameters.get("received_until"),
        "parameters": built.parameters,
        "privacy": built.privacy.as_dict(),
        "rows": built.table.num_rows,
        "code_version": code_version(),
        "built_at": built_at.isoformat(timespec="seconds"),
        "rebuild": (
            "build_dataset(..., at_versions=<the Delta versions the hub keeps in "
            "<lake>/_hub/publish/source-versions/>, received_until=received_until) reads the same samples; "
            "a later release repeats this one's rows for the days it published first"
        ),
    }


def publish_release(
    lake: Lake,
    dataset_id: str,
    date_from: date,
    date_to: date,
    settings: Settings,
    *,
    progress: Progress | None = None,
    version: str | None = None,
    csv_bom: bool = False,
    allow_empty: bool = False,
    at_versions: Mapping[str, int] | None = None,
) -> ReleaseResult:
    """Build, check and release ``dataset_id`` for JST ``date_from`` .. ``date_to``; see the module doc."""
    check_preconditions(dataset_id, settings)  # unknown id, missing secret... before anything else
    check_range(date_from, date_to)
    lake.require()  # before the dataset's folder and lock file are made
    if version is not None and (not _VERSION.fullmatch(version) or version == LATEST):
        raise PublishError(f"Invalid version name {version!r}: letters, digits, '.', '_' and '-' only")
    report = progress or (lambda done, total, label: None)
    dataset_dir = Path(settings.releases) / dataset_id
    plan = dp_plan(dataset_id, settings)
    private = plan is not None
    if private and at_versions is not None:
        raise PublishError(
            f"{dataset_id} is published with differential privacy, whose noise cannot be drawn again "
            "identically: a rebuild is the stored release itself (its files and manifest.json); a new "
            "draw is a new release that spends privacy budget"
        )
    with _dataset_lock(dataset_dir):
        log = open_log(Path(settings.releases), dataset_id, PROVENANCE)
        for folder in release_folders(dataset_dir):  # their rows are repeated: they must be the public ones
            check_intact(folder, log.manifest_sha256(dataset_id, folder.name))
        for stale in dataset_dir.glob(".tmp-*"):  # left by a publish that was killed (the log is settled)
            shutil.rmtree(stale, ignore_errors=True)
        name = version or log.unused_version(dataset_id, next_version(dataset_dir, date_from, date_to))
        final = dataset_dir / name
        if final.exists():
            raise ReleaseExists(f"Release {dataset_id}/{name} exists already: releases are never overwritten")
        received_until = datetime.now(UTC)
        repeated = _days_published_before(dataset_dir, dataset_id, date_from, date_to, settings)
        mode = DP if private else EXACT
        log.check(dataset_id, name, days_between(date_from, date_to), mode, repeated)
        new_days = [d for d in days_between(date_from, date_to) if d not in repeated]
        if new_days:
            check_closed(new_days, lake, settings, received_until)
        cuts = log.cut(new_days, received_until)  # any attempt fixes a day's one cut, for every dataset
        ledger = (
            PrivacyLedger(ledger_path(Path(settings.releases)), settings.dp_budget_epsilon)
            if plan is not None and new_days  # repeating days published before draws no new noise
            else None
        )
        spending: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if ledger is not None and plan is not None:
            # per-dataset ledgers of old versions, and what DP folders state they spent (a lost ledger)
            ledger.adopt(
                [*legacy_entries(Path(settings.releases)), *released_entries(Path(settings.releases))]
            )
            check_charges_known(ledger, log, new_days)
            ledger.settle(release_placed(Path(settings.releases), dataset_id, PROVENANCE, log.has))
            while version is None:  # a charged or logged version's name is never reused
                bumped = log.unused_version(dataset_id, ledger.unused_version(dataset_id, name))
                if bumped == name:
                    break
                name = bumped
            final = dataset_dir / name
            spending = ledger.spending(
                dataset_id, name, new_days, plan.epsilon(settings), plan.delta(settings)
            )
        with spending as charge:  # reserved before any work
            if ledger is not None and isinstance(charge, LedgerEntry):
                ledger.drawn(charge)  # the build reads the lake and draws noise: whatever follows is spent
            built, files, built_at = _build_and_place(
                lake,
                dataset_id,
                date_from,
                date_to,
                settings,
                final,
                report,
                ledger=ledger,
                csv_bom=csv_bom,
                allow_empty=allow_empty,
                at_versions=at_versions,
                received_until=received_until,
                new_days=new_days,
                cuts=cuts,
                log=log,
                mode=mode,
            )
        record_source_versions(lake, dataset_id, name, built.source_versions)  # private: docs/PRIVACY.md
        late = late_samples(lake, repeated)
        if late:
            record_late(lake, dataset_id, late, received_until)
        _fsync(dataset_dir)
        _write_json(
            dataset_dir / LATEST,
            {
                "dataset": dataset_id,
                "version": name,
                "date_from": date_from.isoformat(),
                "date_to": date_to.isoformat(),
                "published_at": built_at.isoformat(timespec="seconds"),
            },
        )
        _fsync(dataset_dir)
    report(len(STEPS), len(STEPS), f"{dataset_id}: done")
    return ReleaseResult(
        dataset_id,
        name,
        final,
        files,
        built.table.num_rows,
        built.privacy,
        dict(built.source_versions),
        days_repeated=sorted(repeated),
        late_samples=late,
    )


def _dp_threshold(privacy: PrivacyReport) -> str:
    dp = privacy.extra.get("differential_privacy")
    return f" or the noisy threshold {dp['publication_threshold']}" if isinstance(dp, dict) else ""


def _days_published_before(
    dataset_dir: Path, dataset_id: str, date_from: date, date_to: date, settings: Settings
) -> dict[date, datetime]:
    """The days of the range an earlier release published, each with what that first release had read
    (its ``received_until``; its build time for a release older than the rule).  A day keeps the rules it
    was first published with: another k, dominance, lateness, privacy zones or DP setting is refused."""
    entry = dataset_entry(dataset_id)
    folders = release_folders(dataset_dir)
    if not folders or entry.time_column is None:
        return {}
    time_index = [c.name for c in entry.spec.columns].index(entry.time_column)
    first = read_earlier(folders, entry.spec, entry.key_columns).first_publications(time_index)
    now = rules_of(current_rules(dataset_id, settings))
    out: dict[date, datetime] = {}
    for day in days_between(date_from, date_to):
        if day not in first:
            continue
        release = first[day].release
        differences = rule_differences(rules_of(release.parameters), now)
        if differences:
            raise PublishError(
                f"{day} was published by {dataset_id} {release.folder.name} under other rules "
                f"({'; '.join(differences)}): a day is published once, with one set of rules; publish a "
                "range without it, or with the same settings"
            )
        by_day = release.parameters.get("received_until_by_day") or {}
        stamp = by_day.get(day.isoformat()) or release.received_until or release.built_at
        out[day] = datetime.fromisoformat(stamp) if stamp else datetime.now(UTC)
    return out


def current_rules(dataset_id: str, settings: Settings) -> dict[str, Any]:
    """The rules this build would record in its parameters (``publish.closure.RULE_KEYS``)."""
    rules: dict[str, Any] = {
        "k": settings.publish_k,
        "dominance_share": settings.publish_dominance,
        "lateness_h": settings.publish_lateness_h,
        "privacy_zones_sha256": privacy_zones_sha256(settings),
    }
    if dp_plan(dataset_id, settings) is not None:
        rules.update(
            dp_epsilon=settings.dp_epsilon,
            dp_delta=settings.dp_delta,
            dp_false_cells=settings.dp_false_cells,
            dp_operators=settings.dp_operators,
        )
    return rules


def _build_and_place(
    lake: Lake,
    dataset_id: str,
    date_from: date,
    date_to: date,
    settings: Settings,
    final: Path,
    report: Progress,
    *,
    ledger: PrivacyLedger | None,
    csv_bom: bool,
    allow_empty: bool,
    at_versions: Mapping[str, int] | None,
    received_until: datetime,
    new_days: list[date],
    cuts: Mapping[date, datetime],
    log: ReleaseLog,
    mode: str,
) -> tuple[BuiltDataset, list[Path], datetime]:
    """Build, gate, write into a temporary folder and rename it to ``final``; nothing stays on failure."""
    dataset_dir, name = final.parent, final.name
    report(0, len(STEPS), f"{dataset_id}: {STEPS[0]}")
    built = build_dataset(
        lake,
        dataset_id,
        date_from,
        date_to,
        settings,
        previous=release_folders(dataset_dir),
        at_versions=at_versions,
        received_until=received_until,
        day_cuts=cuts,
    )
    if built.table.num_rows == 0 and not allow_empty:
        p = built.privacy
        earlier = p.extra.get("cells_suppressed_earlier_releases", 0)
        raise NothingPublishable(
            f"Nothing to publish for {dataset_id} from {date_from} to {date_to}: all {p.cells_before} "
            f"cells were suppressed ({p.cells_suppressed_k} under k={p.k}{_dp_threshold(p)}, "
            f"{p.cells_suppressed_dominance} dominated, {earlier} held by earlier releases)"
            + (
                "; its privacy budget is spent all the same (the noise was drawn, and publishing nothing "
                "is an outcome of it)"
                if ledger is not None
                else ""
            )
        )
    report(1, len(STEPS), f"{dataset_id}: {STEPS[1]}")
    failures = gate.check(built, settings)
    if failures:
        raise GateFailed(dataset_id, failures)
    if ledger is not None:  # this release's reservation is in the ledger already
        built.privacy.extra["privacy_budget"] = {
            "unit": "device-day",
            "this_release": {
                "epsilon": built.privacy.epsilon,
                "delta": built.privacy.delta,
                "days_charged": [d.isoformat() for d in new_days],
            },
            **ledger.summary(new_days),  # every dataset's releases on these days, this one included
        }
    tmp = dataset_dir / f".tmp-{name}-{uuid.uuid4().hex}"
    try:
        tmp.mkdir()
        report(2, len(STEPS), f"{dataset_id}: {STEPS[2]}")
        built_at = datetime.now(UTC)
        built.parameters.update(date_from=date_from.isoformat(), date_to=date_to.isoformat())
        built.parameters["received_until"] = received_until.isoformat()
        built.parameters["days_first_published"] = [d.isoformat() for d in new_days]
        built.parameters["received_until_by_day"] = {d.isoformat(): c.isoformat() for d, c in cuts.items()}
        built.parameters.setdefault("code_version", code_version())
        written = write_release(built, tmp, settings, csv_bom=csv_bom, version=name, built_at=built_at)
        _write_json(tmp / PROVENANCE, provenance(built, name, built_at))
        write_manifest(tmp, dataset_id, name)  # again, now listing provenance.json too
        report(3, len(STEPS), f"{dataset_id}: {STEPS[3]}")
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            _fsync(path)
        _fsync(tmp)
        manifest = file_sha256(tmp / MANIFEST)
        log.placing(dataset_id, name, days_of(date_from, date_to), mode, tmp.name, manifest)
        try:
            os.rename(tmp, final)  # the lock and the exists() check: nothing is replaced
        except BaseException:
            log.forget(dataset_id, name)  # not renamed: never seen
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.published(dataset_id, name)
    files = sorted({final / Path(p).relative_to(tmp) for p in written} | {final / PROVENANCE})
    return built, files, built_at
