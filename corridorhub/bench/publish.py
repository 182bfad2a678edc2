"""``bench publish``: the full publish of the four aggregate datasets against the bare DuckDB aggregation.

Steps: (1) a corridor day of ``rows`` state rows (``corridorhub.bench.corridor_day``, the generator of
``bench query``) in ``{workdir}/day-{rows}-{devices}dev-seed{seed}-v{generator}/``, made through
``Lake.append`` with a progress bar unless a complete one is cached there; (2) for each repeat and each of
``publish.datasets.default_ids()``, in alternating order, (a) ``publish_release`` into a fresh temporary
releases folder, the whole release: build (queries, suppression), privacy gate, Parquet, CSV, GeoJSON,
dictionary, datapackage, DCAT, CKAN JSON, provenance, manifest, fsync and atomic rename, and (b) the bare
aggregation of the same cells written by one ``COPY`` (``corridorhub.bench.publish_baseline``).

The day has far more devices than ``bench query``'s (one sample per device and second, so about 310 at
20 M rows, instead of 31 at 10 Hz): with k = 10 distinct devices per cell, too few devices would suppress
nearly every cell, and the figure would time the publication of almost nothing.  Most suppression left is
the dominance rule, by construction of the simulated fleet: several routes are driven by one operator
only, so their cells are always that operator's (the share published is reported next to the times).
"""

from __future__ import annotations

import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta, timezone
from pathlib import Path

import duckdb

from corridorhub.bench.corridor_day import (
    DAY_SPAN_S,
    DAY_START_UTC,
    GENERATOR_VERSION,
    CachedDay,
    DayPlan,
)
from corridorhub.bench.publish_baseline import copy_cells, open_baseline
from publish.datasets import default_ids
from publish.release import STEPS, publish_release
from store.lake import Lake
from store.settings import Settings

#: Samples per device and second of the publish day: sets the number of devices for a number of rows.
SAMPLE_HZ = 1.0
MIN_DEVICES = 40  # a tiny smoke day still has enough devices for k = 10 somewhere
JST = timezone(timedelta(hours=9))
#: The JST day the generated operating day (05:00-23:00 JST) lies in.
DAY_JST = DAY_START_UTC.astimezone(JST).date()


@dataclass(frozen=True)
class PublishBenchConfig:
    rows: int = 20_000_000
    seed: int = 0
    repeats: int = 1
    regenerate: bool = False


@dataclass
class DatasetTiming:
    """Seconds per run of one dataset on each side, and what the publish produced."""

    dataset_id: str
    publish_s: list[float] = field(default_factory=list)
    baseline_s: list[float] = field(default_factory=list)
    steps_s: dict[str, list[float]] = field(default_factory=dict)  # publish step -> seconds per run
    cells: int = 0  # candidate cells before suppression (every level)
    published: int = 0  # cells published
    suppressed_k: int = 0
    suppressed_dominance: int = 0
    suppressed_complementary: int = 0
    baseline_rows: int = 0  # cells the bare aggregation wrote
    files: int = 0  # files in the release

    @property
    def publish_median_s(self) -> float:
        return statistics.median(self.publish_s)

    @property
    def baseline_median_s(self) -> float:
        return statistics.median(self.baseline_s)


@dataclass(frozen=True)
class PublishBenchResult:
    rows: dict[str, int]  # rows per table of the generated day
    devices: int
    interval_s: float
    generated_s: float | None  # None: the cached day was reused
    repeats: int
    timings: list[DatasetTiming]


def publish_plan(rows: int, seed: int) -> DayPlan:
    """A day of ``rows`` state rows with one sample per device and second (at least ``MIN_DEVICES``)."""
    devices = max(MIN_DEVICES, round(rows / (SAMPLE_HZ * DAY_SPAN_S)))
    per_device = math.ceil(rows / devices)
    return DayPlan(rows, seed, devices, per_device, DAY_SPAN_S / per_device)


def publish_day(workdir: Path, plan: DayPlan) -> CachedDay:
    name = f"day-{plan.rows}-{plan.devices}dev-seed{plan.seed}-v{GENERATOR_VERSION}"
    return CachedDay(workdir / name, plan)


def prepare_day(day: CachedDay, regenerate: bool, echo: Callable[[str], None]) -> float | None:
    """Make the day's lake unless a complete one is cached; the seconds it took, or None when reused."""
    if not regenerate and day.manifest() is not None:
        echo(f"reusing the generated day in {day.folder} (--regenerate to make it again)")
        return None
    counts, seconds = day.generate(echo)
    day.write_manifest(counts, seconds)  # last: marks the cached day complete
    return seconds


def table_rows(lake: Lake) -> dict[str, int]:
    con = lake.connect()
    try:
        return {
            name: int(con.execute(f"SELECT count(*) FROM {name}").fetchone()[0])  # type: ignore[index]
            for name in ("state", "network", "event")
        }
    finally:
        con.close()


def run_publish_bench(
    config: PublishBenchConfig, settings: Settings, workdir: Path, echo: Callable[[str], None]
) -> PublishBenchResult:
    day = publish_day(workdir, publish_plan(config.rows, config.seed))
    generated_s = prepare_day(day, config.regenerate, echo)
    lake = Lake(day.lake_path)
    rows = table_rows(lake)
    ids = default_ids()
    timings = {dataset_id: DatasetTiming(dataset_id) for dataset_id in ids}
    scratch = day.folder / "runs"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    echo(f"timing {config.repeats} run(s) per dataset and side, JST day {DAY_JST}, k={settings.publish_k}, "
         f"dominance {settings.publish_dominance:g}:")  # fmt: skip
    try:
        baseline = open_baseline(lake, DAY_JST)
        try:
            for repeat in range(config.repeats):
                for dataset_id in ids:
                    timing = timings[dataset_id]
                    # Alternate which side goes first, so that a drift in the machine hits both.
                    if repeat % 2 == 0:
                        _time_baseline(timing, baseline, scratch)
                    _time_publish(timing, lake, settings, scratch)
                    if repeat % 2 == 1:
                        _time_baseline(timing, baseline, scratch)
                    echo(_progress_line(timing))
        finally:
            baseline.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return PublishBenchResult(
        rows=rows,
        devices=day.plan.devices,
        interval_s=day.plan.interval_s,
        generated_s=generated_s,
        repeats=config.repeats,
        timings=[timings[i] for i in ids],
    )


def _time_publish(timing: DatasetTiming, lake: Lake, settings: Settings, scratch: Path) -> None:
    releases = Path(tempfile.mkdtemp(prefix="releases-", dir=scratch))
    marks: list[float] = []

    def progress(done: int, total: int, label: str) -> None:
        marks.append(time.perf_counter())

    try:
        started = time.perf_counter()
        result = publish_release(
            lake,
            timing.dataset_id,
            DAY_JST,
            DAY_JST,
            replace(settings, releases=releases),
            progress=progress,
            allow_empty=True,  # a smoke day may suppress every cell: still a release to time
        )
        timing.publish_s.append(time.perf_counter() - started)
    finally:
        shutil.rmtree(releases, ignore_errors=True)
    # progress() is called at the start of each step and once at the end.
    for step, (begin, end) in zip(STEPS, zip(marks, marks[1:], strict=False), strict=False):
        timing.steps_s.setdefault(step, []).append(end - begin)
    p = result.privacy
    timing.cells, timing.published = p.cells_before, p.cells_published
    timing.suppressed_k, timing.suppressed_dominance = p.cells_suppressed_k, p.cells_suppressed_dominance
    timing.suppressed_complementary = p.cells_suppressed_complementary
    timing.files = len(result.files)


def _time_baseline(timing: DatasetTiming, baseline: duckdb.DuckDBPyConnection, scratch: Path) -> None:
    target = scratch / f"{timing.dataset_id}.parquet"
    seconds, timing.baseline_rows = copy_cells(baseline, timing.dataset_id, target)
    target.unlink(missing_ok=True)
    timing.baseline_s.append(seconds)


def _progress_line(timing: DatasetTiming) -> str:
    publish, baseline = timing.publish_s[-1], timing.baseline_s[-1]
    return (
        f"  {timing.dataset_id:<22} publish {publish:7.2f} s   bare COPY {baseline:7.2f} s   "
        f"ratio {publish / baseline:5.2f}"
    )
