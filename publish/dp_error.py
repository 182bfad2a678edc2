"""What differential privacy does to a cell's device count, per dataset and cell size: the table in
docs/PRIVACY.md.

    python -m publish.dp_error [--epsilon 1 --epsilon 4 --epsilon 10] [--operators 3] [--cells 20000]

For each dataset's plan (``publish.aggregates_dp``) and each ``dp_epsilon`` (per device-day, all datasets
together), it draws the device-count noise of ``--cells`` cells of 10, 30, 100 and 300 devices (split
evenly over ``--operators`` public operators) with the release's own mechanism (``publish.dp``: OpenDP
discrete Laplace per (cell, operator), the plan's L and its share of epsilon), applies the release's
publication rule (noisy count at least the threshold, noisy operator share at most 0.8) and prints:

* the threshold and how many cells without any device noise alone publishes per day (expected);
* per cell size, the mean relative error of the published count, ``|noisy - true| / true`` over all cells
  drawn, and the share of such cells that is published.

It ends with one JSON line holding the figures.  Noise only: the bias of contribution bounding (a
device-day with more than L cells counts in a keyed random L of them) depends on the data and is reported
per release (``device_cells_dropped_by_bounding`` in privacy.json).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from publish import aggregates_dp  # noqa: F401  (registers the plans)
from publish.dp import _laplace_int, int_scale
from publish.dp_threshold import publication_threshold, sum_tail
from publish.noise import DP_PLANS, DpPlan, noisy_share
from store.settings import Settings

SIZES = (10, 30, 100, 300)
DEFAULT_EPSILONS = (1.0, 4.0, 10.0)


def cells_per_day(plan: DpPlan, settings: Settings) -> int:
    """The public universe's cells of one JST day."""
    buckets = timedelta(days=1) // plan.time_step
    extra = int(np.prod([len(v) for v in plan.extra_keys.values()])) if plan.extra_keys else 1
    return buckets * len(plan.space(settings)) * extra


def measure(plan: DpPlan, epsilon: float, operators: int, cells: int, settings: Settings) -> dict[str, Any]:
    """The figures of one dataset at one ``dp_epsilon``."""
    devices_epsilon = epsilon * plan.epsilon_share * plan.devices_share
    sensitivity = plan.contributions_per_day
    scale = int_scale(sensitivity, devices_epsilon)
    per_day = cells_per_day(plan, settings)
    threshold = publication_threshold(scale, operators, per_day, settings.publish_k, settings.dp_false_cells)
    out: dict[str, Any] = {
        "dataset": plan.dataset_id,
        "dp_epsilon": epsilon,
        "devices_epsilon": devices_epsilon,
        "L": sensitivity,
        "scale": scale,
        "cells_per_day": per_day,
        "threshold": threshold,
        "false_cells_per_day": per_day * sum_tail(scale, operators, threshold),
        "sizes": {},
    }
    for size in SIZES:
        split = [size // operators + (1 if i < size % operators else 0) for i in range(operators)]
        noisy, _ = _laplace_int(split * cells, sensitivity, devices_epsilon)
        per_operator = np.asarray(noisy).reshape(cells, operators)
        published_counts = np.maximum(per_operator.sum(axis=1), 0)
        shares = [noisy_share(tuple(int(c) for c in row)) for row in per_operator]
        published = (published_counts >= threshold) & np.array(
            [s is not None and s <= settings.publish_dominance for s in shares]
        )
        out["sizes"][size] = {
            "relative_error": float(np.mean(np.abs(published_counts - size)) / size),
            "published_share": float(published.mean()),
        }
    return out


def table(results: Sequence[dict[str, Any]]) -> str:
    header = (
        "| dataset | ε (all datasets) | L | noise scale | threshold | empty cells published / day | "
        + " | ".join(f"{n} devices" for n in SIZES)
        + " |"
    )
    lines = [header, "|" + "---|" * (6 + len(SIZES))]
    for r in results:
        sizes = " | ".join(
            f"{r['sizes'][n]['relative_error']:.0%} ({r['sizes'][n]['published_share']:.0%})" for n in SIZES
        )
        lines.append(
            f"| `{r['dataset']}` | {r['dp_epsilon']:g} | {r['L']} | {r['scale']:.2f} | {r['threshold']} | "
            f"{r['false_cells_per_day']:.2f} | {sizes} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m publish.dp_error", description=__doc__.split("\n")[0])
    parser.add_argument("--epsilon", type=float, action="append", help="dp_epsilon (repeatable)")
    parser.add_argument("--operators", type=int, default=3, help="public operators (default 3)")
    parser.add_argument("--cells", type=int, default=20_000, help="cells drawn per size (default 20000)")
    args = parser.parse_args(argv)
    if args.operators < 1 or args.cells < 1:
        parser.error("--operators and --cells must be at least 1")
    settings = Settings()
    results = [
        measure(plan, epsilon, args.operators, args.cells, settings)
        for plan in DP_PLANS.values()
        for epsilon in args.epsilon or DEFAULT_EPSILONS
    ]
    print(
        f"Device counts under differential privacy: relative error (share of such cells published), "
        f"{args.operators} operators, k={settings.publish_k}, dominance {settings.publish_dominance:g}, "
        f"dp_false_cells {settings.dp_false_cells:g}, {args.cells} cells drawn per size"
    )
    print(table(results))
    print(json.dumps({"dp_error": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
