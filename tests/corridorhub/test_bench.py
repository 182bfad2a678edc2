"""``corridorhub bench``: the ingest benchmark runs end to end and reports what it promises.

No timing is asserted (timing belongs to the benchmark's own output): only that every figure is there,
is positive, and that the ratio printed is ingest over ceiling.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from corridorhub.bench._measure import peak_rss_mb, percentile
from corridorhub.bench.workload import workload
from corridorhub.cli import cli

REQUIRED = (
    "single_ceiling_msgs_per_s",
    "single_ingest_msgs_per_s",
    "single_ratio",
    "batch_ceiling_msgs_per_s",
    "batch_ingest_msgs_per_s",
    "batch_rows_per_s",
    "batch_ratio",
    "peak_rss_mb",
    "p50_freshness_s",
    "p99_freshness_s",
)
TARGET_KEYS = {"single_ratio", "batch_rows_per_s", "peak_rss_mb", "p99_freshness_s"}


def test_bench_ingest_ends_with_one_json_line_of_its_figures() -> None:
    result = CliRunner().invoke(
        cli,
        ["bench", "ingest", "--seconds", "1", "--single-messages", "300", "--batch-messages", "20",
         "--rate", "300"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert not any(line.startswith("{") for line in lines[:-1]), "exactly one JSON line, the last"

    for key in REQUIRED:
        assert figures[key] > 0, key
    assert figures["single_messages"] == 300
    assert figures["batch_messages"] == 20
    assert figures["batch_samples_per_message"] == 100
    assert figures["single_ratio"] == pytest.approx(
        figures["single_ingest_msgs_per_s"] / figures["single_ceiling_msgs_per_s"], abs=1e-4
    )
    assert figures["batch_ratio"] == pytest.approx(
        figures["batch_ingest_msgs_per_s"] / figures["batch_ceiling_msgs_per_s"], abs=1e-4
    )
    # Both rates are rounded to 0.1 before printing: 100 x a rounded msgs/s is off by up to 5 rows/s.
    assert figures["batch_rows_per_s"] == pytest.approx(100 * figures["batch_ingest_msgs_per_s"], abs=5.1)
    assert figures["p50_freshness_s"] <= figures["p99_freshness_s"] <= figures["max_freshness_s"]
    assert figures["peak_rss_mb"] == max(
        figures[f"{phase}_peak_rss_mb"] for phase in ("single", "batch", "freshness")
    )
    assert set(figures["targets_met"]) == TARGET_KEYS
    assert figures["machine"]["cpus"]
    # The readable report says the same, and which targets are met.
    report = "\n".join(lines[:-1])
    assert f"ratio b/a {figures['single_ratio']:.3f}" in report
    for key in TARGET_KEYS:
        assert key in report


def test_bench_help_names_the_targets() -> None:
    result = CliRunner().invoke(cli, ["bench", "ingest", "--help"])
    assert result.exit_code == 0
    for key in TARGET_KEYS:
        assert key in result.output


@pytest.mark.parametrize("batch", [1, 100])
def test_workload_repeats_the_fleet_with_fresh_gap_free_seq(batch: int) -> None:
    load = workload("t", 2_000 if batch == 1 else 120, batch=batch, base_samples=3_000)
    keys = [key for m in load.messages for key in m.valid_keys]
    assert len(keys) == len(set(keys)) == load.rows
    assert all(len(m.valid_keys) == batch for m in load.messages)
    per_stream: dict[tuple[str, str, str], list[int]] = {}
    for operator, device, stream, seq, _ts in keys:
        per_stream.setdefault((operator, device, stream), []).append(seq)
    for seqs in per_stream.values():
        assert seqs == list(range(len(seqs)))
    # The repeats' payloads carry the moved-on seq the ground truth says.
    for message in load.messages[-20:]:
        decoded = json.loads(message.payload)
        samples = decoded if isinstance(decoded, list) else [decoded]
        assert [s["seq"] for s in samples] == [key[3] for key in message.valid_keys]


def test_percentile_agrees_with_numpy() -> None:
    values = [0.9, 0.1, 0.5, 0.25, 2.0, 1.1, 0.05]
    for q in (0, 1, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    with pytest.raises(ValueError):
        percentile([], 50)


def test_peak_rss_is_this_process_own() -> None:
    assert 1 < peak_rss_mb() < 100_000
