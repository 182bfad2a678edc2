"""``corridorhub bench publish``: a tiny run ends with one JSON line holding every figure it promises.

No timing is asserted (timing belongs to the benchmark's output): only that the figures are there and
consistent with each other, that both sides produced the same cells, and that a second run reuses the
generated day instead of making it again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from corridorhub.bench.publish import publish_day, publish_plan
from corridorhub.cli import cli
from publish.datasets import default_ids

ROWS = 20_000


def _run(workdir: Path) -> tuple[dict[str, object], str, str]:
    result = CliRunner().invoke(cli, ["bench", "publish", "--rows", str(ROWS), "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert not any(line.startswith("{") for line in lines[:-1]), "exactly one JSON line, the last"
    return json.loads(lines[-1]), "\n".join(lines[:-1]), result.stderr


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], str, Path]:
    workdir = tmp_path_factory.mktemp("bench-publish")
    figures, report, _ = _run(workdir)
    return figures, report, workdir


def test_bench_publish_ends_with_one_json_line_of_its_figures(
    first_run: tuple[dict[str, object], str, Path],
) -> None:
    figures, report, _ = first_run
    assert figures["rows"] >= ROWS  # type: ignore[operator]
    assert figures["network_rows"] == pytest.approx(figures["rows"] / 5, rel=0.01)  # type: ignore[operator]
    assert figures["event_rows"] > 0  # type: ignore[operator]
    assert figures["devices"] == publish_plan(ROWS, 0).devices
    assert figures["datasets"] == list(default_ids())
    publish_total = baseline_total = 0.0
    for dataset_id in default_ids():
        key = dataset_id.replace("-", "_")
        publish, baseline = figures[f"{key}_publish_s"], figures[f"{key}_baseline_s"]
        assert isinstance(publish, float) and isinstance(baseline, float)
        assert publish > 0 and baseline > 0, dataset_id
        assert figures[f"{key}_ratio"] == pytest.approx(publish / baseline, rel=1e-2)
        # Both sides aggregate the same cells; the publish keeps those that pass k and dominance.
        assert figures[f"{key}_cells"] == figures[f"{key}_baseline_cells"], dataset_id
        assert 0 <= figures[f"{key}_published"] <= figures[f"{key}_cells"]  # type: ignore[operator]
        assert figures[f"{key}_files"] >= 8, dataset_id  # type: ignore[operator]
        assert figures[f"{key}_building_s"] <= publish  # type: ignore[operator]
        publish_total += publish
        baseline_total += baseline
        assert dataset_id in report
    assert figures["publish_total_s"] == pytest.approx(publish_total, abs=1e-2)
    assert figures["baseline_total_s"] == pytest.approx(baseline_total, abs=1e-2)
    assert figures["publish_ratio"] == pytest.approx(publish_total / baseline_total, rel=1e-2)
    assert 0 <= figures["published_share"] <= 1  # type: ignore[operator]
    assert figures["targets_met"] == {"publish_ratio": figures["publish_ratio"] <= 1.5}  # type: ignore[operator]
    assert isinstance(figures["machine"], dict) and figures["machine"]["cpus"]
    assert isinstance(figures["load_average_start"], float)
    assert isinstance(figures["load_average_end"], float)
    assert "publish_ratio" in report


def test_a_second_run_reuses_the_generated_day(first_run: tuple[dict[str, object], str, Path]) -> None:
    _, _, workdir = first_run
    day = publish_day(workdir, publish_plan(ROWS, 0))
    assert day.manifest() is not None
    figures, _, log = _run(workdir)
    assert figures["generate_s"] is None
    assert "reusing the generated day" in log
    assert not (day.folder / "runs").exists(), "the runs' releases and COPY files are removed"
