"""``corridorhub bench query``: a tiny run ends with one JSON line holding every figure it promises.

No timing is asserted (timing belongs to the benchmark's output): only that the figures are there and
consistent with each other, that both sides returned the same rows, and that a second run reuses the
generated day instead of making it again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from corridorhub.bench.corridor_day import DayPlan, cached_day
from corridorhub.bench.query import QUERIES
from corridorhub.cli import cli
from store.lake import Lake

ROWS = 20_000


def _run(workdir: Path) -> tuple[dict[str, Any], str]:
    result = CliRunner().invoke(
        cli, ["bench", "query", "--rows", str(ROWS), "--workdir", str(workdir), "--http-requests", "40"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert not any(line.startswith("{") for line in lines[:-1]), "exactly one JSON line, the last"
    return json.loads(lines[-1]), "\n".join(lines[:-1])


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    workdir = tmp_path_factory.mktemp("bench-query")
    figures, report = _run(workdir)
    return figures, report, workdir


def test_bench_query_ends_with_one_json_line_of_its_figures(
    first_run: tuple[dict[str, Any], str, Path],
) -> None:
    figures, report, _ = first_run
    assert figures["rows"] >= ROWS
    assert figures["network_rows"] == pytest.approx(figures["rows"] / 5, rel=0.01)
    assert figures["event_rows"] > 0
    ratios = {}
    for query in QUERIES:
        sandbox, plain = figures[f"{query.name}_sandbox_s"], figures[f"{query.name}_plain_s"]
        assert sandbox > 0 and plain > 0, query.name
        assert figures[f"{query.name}_ratio"] == pytest.approx(sandbox / plain, rel=1e-2)
        assert figures[f"{query.name}_sandbox_cpu_s"] > 0 and figures[f"{query.name}_plain_cpu_s"] > 0
        assert figures[f"{query.name}_runs"] >= 3
        assert figures[f"{query.name}_rows"] > 0, query.name
        ratios[query.name] = figures[f"{query.name}_ratio"]
    assert figures["worst_query_ratio"] == max(ratios.values())
    assert figures["worst_query_cpu_ratio"] == figures[f"{figures['worst_query_cpu']}_cpu_ratio"]
    assert ratios[str(figures["worst_query"])] == figures["worst_query_ratio"]
    assert figures["top_n_rows"] == 20

    assert figures["http_requests"] == 40
    assert figures["http_clients"] == 8
    assert figures["http_errors"] == 0
    p50, p99, worst = figures["http_p50_ms"], figures["http_p99_ms"], figures["http_max_ms"]
    assert 0 < p50 <= p99 <= worst
    assert 0 < figures["http_1client_p50_ms"] <= figures["http_1client_p99_ms"]
    assert figures["http_requests_per_s"] > 0

    assert figures["statistic"] == "median" and figures["repeats"] == 3
    assert figures["targets_met"] == {"worst_query_ratio": figures["worst_query_ratio"] <= 1.3}
    assert figures["machine"]["cpus"]
    assert isinstance(figures["load_average_start"], float)
    # The readable report names every query, the HTTP percentiles and the target.
    for query in QUERIES:
        assert query.name in report
    assert "worst_query_ratio <= 1.3" in report
    assert f"p99 {p99:.1f} ms" in report


def test_generated_day_is_a_real_lake_of_the_corridor(first_run: tuple[dict[str, Any], str, Path]) -> None:
    _, _, workdir = first_run
    day = cached_day(workdir, DayPlan.for_rows(ROWS, 0))
    assert day.manifest() is not None
    con = Lake(day.lake_path).connect()
    try:
        lat_lon = con.execute("SELECT min(lat), max(lat), min(lon), max(lon) FROM state").fetchone()
        modes = {r[0] for r in con.execute("SELECT DISTINCT mode FROM state").fetchall()}
        gaps = con.execute(
            "SELECT count(*) FROM (SELECT seq - lag(seq) OVER (PARTITION BY operator, device_id ORDER BY ts)"
            " AS step FROM state) WHERE step <> 1"
        ).fetchone()
    finally:
        con.close()
    assert lat_lon is not None
    assert 35.53 <= lat_lon[0] <= lat_lon[1] <= 35.58 and 139.70 <= lat_lon[2] <= lat_lon[3] <= 139.80
    assert modes == {"autonomous", "manual", "stopped"}
    assert gaps == (0,)  # seq increases by one per device, in ts order


def test_second_run_reuses_the_generated_day(first_run: tuple[dict[str, Any], str, Path]) -> None:
    figures, _, workdir = first_run
    assert figures["generate_s"] is not None
    again, report = _run(workdir)
    assert again["generate_s"] is None
    assert "reused from the cache" in report
    assert again["rows"] == figures["rows"]
