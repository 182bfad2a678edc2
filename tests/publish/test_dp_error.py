"""``python -m publish.dp_error``: the relative-error table of docs/PRIVACY.md is produced by a command
that runs, with the release's own mechanism and defaults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMAND = "python -m publish.dp_error"


def test_the_relative_error_table_command_runs() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "publish.dp_error", "--epsilon", "10", "--cells", "2000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    rows = [line for line in lines if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [
        "network-quality-mesh",
        "traffic-speed-mesh",
        "safety-events",
        "fleet-activity",
    ]
    figures = json.loads(lines[-1])["dp_error"]
    for result in figures:
        errors = [result["sizes"][str(n)]["relative_error"] for n in (10, 30, 100, 300)]
        assert errors == sorted(errors, reverse=True)  # bigger cells, smaller relative error
        assert errors[-1] < 0.05  # 300 devices at epsilon 10: a few percent (noise scale about 2)
        assert result["threshold"] >= 10 and result["false_cells_per_day"] <= 1.0
        assert result["sizes"]["300"]["published_share"] > 0.99


def test_the_privacy_doc_names_the_command_of_its_table() -> None:
    doc = (ROOT / "docs" / "PRIVACY.md").read_text(encoding="utf-8")
    assert f"`{COMMAND}`" in doc
    assert "| dataset | ε (all datasets) | L | noise scale | threshold |" in doc
