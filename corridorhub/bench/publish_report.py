"""The publish benchmark's figures: the readable report, the target, and the closing JSON line."""

from __future__ import annotations

import json
import statistics
from typing import Any

from corridorhub.bench.corridor_day import day_figures
from corridorhub.bench.publish import DatasetTiming, PublishBenchResult
from corridorhub.bench.report import Target
from publish.release import STEPS

#: Target of issue 4: the full publish at most 50% slower than the bare aggregation of the same cells.
PUBLISH_TARGETS = (Target("publish_ratio", 1.5, at_least=False),)


def _key(dataset_id: str) -> str:
    return dataset_id.replace("-", "_")


def _step_key(step: str) -> str:
    return step.replace(" ", "_")


def publish_figures(result: PublishBenchResult) -> dict[str, Any]:
    """Every figure, rounded for print; ratios are computed from the printed (rounded) medians."""
    out: dict[str, Any] = {
        **day_figures(result.rows, result.devices, result.interval_s, result.generated_s),
        "repeats": result.repeats,
        "statistic": "median",
        "datasets": [t.dataset_id for t in result.timings],
    }
    publish_total = baseline_total = 0.0
    cells = published = 0
    for t in result.timings:
        key = _key(t.dataset_id)
        publish, baseline = round(t.publish_median_s, 3), round(t.baseline_median_s, 3)
        publish_total += publish
        baseline_total += baseline
        cells += t.cells
        published += t.published
        out[f"{key}_publish_s"] = publish
        out[f"{key}_baseline_s"] = baseline
        out[f"{key}_ratio"] = round(publish / baseline, 3) if baseline > 0 else None
        for step in STEPS:
            if t.steps_s.get(step):
                out[f"{key}_{_step_key(step)}_s"] = round(statistics.median(t.steps_s[step]), 3)
        out[f"{key}_cells"] = t.cells
        out[f"{key}_published"] = t.published
        out[f"{key}_published_share"] = round(t.published / t.cells, 3) if t.cells else 0.0
        out[f"{key}_suppressed_k"] = t.suppressed_k
        out[f"{key}_suppressed_dominance"] = t.suppressed_dominance
        out[f"{key}_suppressed_complementary"] = t.suppressed_complementary
        out[f"{key}_baseline_cells"] = t.baseline_rows
        out[f"{key}_files"] = t.files
    out["publish_total_s"] = round(publish_total, 3)
    out["baseline_total_s"] = round(baseline_total, 3)
    out["publish_ratio"] = round(publish_total / baseline_total, 3) if baseline_total > 0 else None
    out["cells"] = cells
    out["cells_published"] = published
    out["published_share"] = round(published / cells, 3) if cells else 0.0
    out["targets_met"] = {t.key: out[t.key] is not None and t.met(out) for t in PUBLISH_TARGETS}
    return out


def _dataset_line(t: DatasetTiming, figs: dict[str, Any]) -> str:
    key = _key(t.dataset_id)
    ratio = figs[f"{key}_ratio"]
    steps = ", ".join(
        f"{step} {figs[f'{key}_{_step_key(step)}_s']:.2f}"
        for step in STEPS
        if f"{key}_{_step_key(step)}_s" in figs
    )
    return (
        f"  {t.dataset_id:<22} {figs[f'{key}_publish_s']:>10.2f} {figs[f'{key}_baseline_s']:>10.2f} "
        f"{ratio if ratio is not None else float('nan'):>7.2f} {t.published:>6,}/{t.cells:<6,} "
        f"({figs[f'{key}_published_share']:.0%})   publish steps s: {steps}"
    )


def render_publish(result: PublishBenchResult, figs: dict[str, Any]) -> list[str]:
    """The readable report, ending with the one JSON line."""
    r = result.rows
    made = (
        "reused from the cache" if result.generated_s is None else f"generated in {result.generated_s:.1f} s"
    )
    lines = [
        "corridorhub bench publish",
        f"  data: {r['state']:,} state, {r['network']:,} network, {r['event']:,} event rows; "
        f"{result.devices} devices sampling every {result.interval_s:.3f} s over 05:00-23:00 JST ({made})",
        "  publish: publish_release per dataset into a fresh releases folder (build, suppression, gate, "
        "every file, metadata, manifest, fsync, rename)",
        "  baseline: the same cells' bare DuckDB aggregation, one COPY ... TO parquet (zstd) per dataset",
        f"  median of {result.repeats} run(s) per dataset and side, alternating which goes first",
        f"  {'dataset':<22} {'publish s':>10} {'COPY s':>10} {'ratio':>7} {'published cells':>15}",
    ]
    lines += [_dataset_line(t, figs) for t in result.timings]
    lines += [
        f"  {'total':<22} {figs['publish_total_s']:>10.2f} {figs['baseline_total_s']:>10.2f} "
        f"{figs['publish_ratio'] or float('nan'):>7.2f} {figs['cells_published']:>6,}/{figs['cells']:<6,} "
        f"({figs['published_share']:.0%})",
        "  target (2-core machine):",
    ]
    for target in PUBLISH_TARGETS:
        verdict = "met" if figs["targets_met"][target.key] else "NOT MET"
        lines.append(f"    {str(target):<30} {figs[target.key]:>10} {verdict}")
    lines.append(json.dumps(figs, sort_keys=True))
    return lines
