"""The ingest benchmark's figures: the readable report, the targets, and the closing JSON line."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corridorhub.bench.ingest import IngestBenchResult, Throughput


@dataclass(frozen=True)
class Target:
    key: str
    bound: float
    at_least: bool  # True: the figure must be >= bound; False: <= bound

    def met(self, figures: dict[str, Any]) -> bool:
        compare: Callable[[float, float], bool] = operator.ge if self.at_least else operator.le
        return bool(compare(figures[self.key], self.bound))

    def __str__(self) -> str:
        return f"{self.key} {'>=' if self.at_least else '<='} {self.bound:,g}"


#: Targets of issue 2 for a 2-core machine.
TARGETS = (
    Target("single_ratio", 0.8, at_least=True),
    Target("batch_rows_per_s", 300_000, at_least=True),
    Target("peak_rss_mb", 400, at_least=False),
    Target("p99_freshness_s", 2.0, at_least=False),
)


def figures(result: IngestBenchResult) -> dict[str, Any]:
    """Every figure of the run, rounded for print; the ratios are computed from the printed rates."""
    out: dict[str, Any] = {"seconds": result.config.seconds}
    for t in (result.single, result.batch):
        out.update(_throughput(t))
    out["single_ratio"] = round(out["single_ingest_msgs_per_s"] / out["single_ceiling_msgs_per_s"], 4)
    out["batch_ratio"] = round(out["batch_ingest_msgs_per_s"] / out["batch_ceiling_msgs_per_s"], 4)
    out["batch_rows_per_s"] = out["batch_ingest_rows_per_s"]
    f = result.freshness
    out.update(
        {
            "peak_rss_mb": round(result.peak_rss_mb, 1),
            "single_peak_rss_mb": round(result.single.ingest_run.peak_rss_mb, 1),
            "batch_peak_rss_mb": round(result.batch.ingest_run.peak_rss_mb, 1),
            "freshness_peak_rss_mb": round(result.freshness_peak_rss_mb, 1),
            "p50_freshness_s": round(f.p50_s, 3),
            "p99_freshness_s": round(f.p99_s, 3),
            "max_freshness_s": round(f.max_s, 3),
            "freshness_resolution_s": round(f.resolution_s, 3),
            "freshness_samples": f.samples,
            "freshness_samples_per_s": round(f.samples_per_s, 1),
        }
    )
    out["targets_met"] = {t.key: t.met(out) for t in TARGETS}
    return out


def _throughput(t: Throughput) -> dict[str, Any]:
    n = t.name
    return {
        f"{n}_messages": t.messages,
        f"{n}_samples_per_message": round(t.samples_per_message, 2),
        f"{n}_payload_bytes": round(t.mean_payload_bytes),
        f"{n}_ceiling_s": round(t.ceiling.seconds, 3),
        f"{n}_ceiling_msgs_per_s": round(t.ceiling.msgs_per_s, 1),
        f"{n}_ceiling_rows_per_s": round(t.ceiling.rows_per_s, 1),
        f"{n}_ingest_s": round(t.ingest.seconds, 3),
        f"{n}_ingest_msgs_per_s": round(t.ingest.msgs_per_s, 1),
        f"{n}_ingest_rows_per_s": round(t.ingest.rows_per_s, 1),
        f"{n}_ingest_commits": t.ingest_run.commits,
    }


def render(result: IngestBenchResult, figs: dict[str, Any]) -> list[str]:
    """The readable report, ending with the one JSON line."""
    s = result.settings
    lines = [
        "corridorhub bench ingest",
        f"  ingest settings: flush every {s.flush_interval_s:g} s or {s.flush_messages:,} messages or "
        f"{s.flush_bytes / 2**20:g} MiB; buffer {s.buffer_bytes / 2**20:g} MiB; "
        f"Receive Maximum {s.receive_maximum:,}",
    ]
    for t in (result.single, result.batch):
        n = t.name
        lines += [
            f"  {n}: {t.messages:,} messages of {t.samples_per_message:g} sample(s), "
            f"{t.mean_payload_bytes:,.0f} B on average",
            f"    (a) ceiling  {figs[f'{n}_ceiling_msgs_per_s']:>12,.0f} msgs/s "
            f"{figs[f'{n}_ceiling_rows_per_s']:>12,.0f} rows/s  ({t.ceiling.seconds:.2f} s)",
            f"    (b) ingest   {figs[f'{n}_ingest_msgs_per_s']:>12,.0f} msgs/s "
            f"{figs[f'{n}_ingest_rows_per_s']:>12,.0f} rows/s  ({t.ingest.seconds:.2f} s, "
            f"{t.ingest_run.commits} commits, peak RSS {t.ingest_run.peak_rss_mb:,.0f} MiB)",
            f"    ratio b/a {figs[f'{n}_ratio']:.3f}",
        ]
    f = result.freshness
    lines += [
        f"  freshness: {f.samples:,} samples at {f.samples_per_s:,.0f}/s; publish to queryable "
        f"p50 {f.p50_s:.3f} s, p99 {f.p99_s:.3f} s, max {f.max_s:.3f} s "
        f"(resolution {f.resolution_s * 1000:.0f} ms: {f.polls} polls; peak RSS "
        f"{result.freshness_peak_rss_mb:,.0f} MiB)",
        f"  ingest peak RSS (all phases): {result.peak_rss_mb:,.0f} MiB",
        "  targets (2-core machine):",
    ]
    for target in TARGETS:
        verdict = "met" if figs["targets_met"][target.key] else "NOT MET"
        lines.append(f"    {str(target):<30} {figs[target.key]:>14,} {verdict}")
    lines.append(json.dumps(figs, sort_keys=True))
    return lines
