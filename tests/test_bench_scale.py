"""`scripts/bench scale` and `scripts/bench backfill` with tiny sizes: the JSON they print has every
figure and goal the closing notes quote. Minutes, not a unit test: run with `pytest -m bench`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.bench


def _bench(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "jobs.simulation.bench", *args, "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_scale_bench_reports_runs_floor_and_goals(tmp_path: Path) -> None:
    figures = _bench("scale", "--scale", "demo", "--wafers", "1", "--cache", str(tmp_path))
    assert set(figures["runs"]) == {"local_1", "local_2", "luigid_2"}
    for run in figures["runs"].values():
        assert run["seconds"] > 0 and run["tasks"] > 0 and run["wall_vs_floor"] > 0
        assert {"ConvertFile", "Train", "Score"} <= set(run["stage_seconds"])
        assert run["peak_rss_mb_per_worker"] > 0 and run["bytes_written_per_byte_read"] > 0
    assert figures["single_file"]["ratio"] > 0 and figures["raw_parse_seconds"]["total"] > 0
    assert set(figures["goals"]) == {
        "single_file_vs_raw_parse", "day_2_workers_wall_vs_floor", "speedup_2_vs_1_worker",
        "peak_rss_mb_per_worker",
    }  # fmt: skip
    assert all(set(g) == {"value", "goal", "met"} for g in figures["goals"].values())
    assert figures["training"]["bounded_by"]["rows_per_tree"] > 0
    assert not list((tmp_path / "scale" / "floor").glob("luigid/luigid.pid"))  # luigid stopped


def test_backfill_bench_reports_speedup_and_luigid_overhead(tmp_path: Path) -> None:
    figures = _bench("backfill", "--days", "2", "--wafers", "1", "--cache", str(tmp_path))
    assert figures["days"] == 2 and set(figures["runs"]) == {"local_1", "luigid_1", "luigid_2"}
    tasks = {run["tasks"] for run in figures["runs"].values()}
    assert len(tasks) == 1 and tasks.pop() > 0  # every run does the same work
    assert figures["speedup_2_vs_1_worker_luigid"] > 0
    assert isinstance(figures["luigid_overhead_seconds_per_task"], float)
