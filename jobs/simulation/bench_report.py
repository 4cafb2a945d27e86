"""`scripts/bench report`: the daily yield report (YieldReport) of a demo-scale day (3 fabs, 3 days
simulated so that the last is scored), as a luigi command and as the stage's own seconds, and
the drawing alone by the number of wafers drawn."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jobs.simulation.bench_tools import REPO, luigi_range, simulate_floor

REPORT_START = "2026-11-01"
REPORT_DAYS = 3  # the third day is scored by a model (trained on the first, validated on the second)


def report(args: argparse.Namespace) -> dict:
    """YieldReport of a demo-scale day as a luigi command (start-up included) and as the stage's
    own seconds; then the drawing alone for a third, two thirds and all of the day's wafers."""
    import datetime as dt

    import luigi.configuration

    root = Path(args.cache) / "report"
    first = dt.date.fromisoformat(REPORT_START)
    last = first + dt.timedelta(days=REPORT_DAYS - 1)
    if not (root / "landing").exists():
        simulate_floor(root, REPORT_DAYS, start=REPORT_START)
    luigi_range(root, str(first), str(last + dt.timedelta(days=1)), workers=2)
    luigi.configuration.get_config().set("paths", "root", str(root))
    from jobs.wafer_yield import YieldReport

    shutil.rmtree(YieldReport(date=last).folder())
    command = [
        sys.executable, "-m", "luigi", "--module", "jobs.wafer_yield", "YieldReport", "--date", str(last),
        "--local-scheduler", "--paths-root", str(root), "--log-level", "WARNING",
    ]  # fmt: skip
    started, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    command_seconds, command_cpu = time.perf_counter() - started, _children_cpu() - cpu
    manifest = YieldReport(date=last).manifest()
    return {
        "date": str(last),
        "dies": manifest["rows"]["dies"],
        "wafers": manifest["rows"]["wafers"],
        "previous_day_wafers": manifest["rows"]["previous_day_wafers"],
        "command_seconds": round(command_seconds, 2),
        "command_cpu_seconds": round(command_cpu, 2),
        "stage_seconds": manifest["seconds"],
        "goal_seconds": 20,
        "ratio_to_goal": round(command_seconds / 20, 2),
        "drawing_by_wafers": _report_scaling(last),
        "note": "command: the whole luigi command (start-up, reading, drawing, publishing); cpu seconds"
        " are what the wall time would be on an idle core (the stage is single-threaded)",
    }


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _report_scaling(day: Any) -> list[dict]:
    """render_report on the first third, two thirds and all of the day's wafers (and as many of
    the day before's): seconds, and seconds per wafer map drawn."""
    from dataclasses import replace

    from jobs.domain import report_page
    from jobs.domain import yield_views as views
    from jobs.wafer_yield import YieldReport, report_inputs

    def first_wafers(dies: Any, count: int) -> Any:
        return dies.merge(
            dies[views.WAFER].drop_duplicates().sort_values(views.WAFER).head(count), on=views.WAFER
        )

    inputs = report_inputs(day, YieldReport(date=day).trend_days())
    wafers = inputs.dies.groupby(views.WAFER).ngroups
    rows = []
    for count in sorted({max(1, wafers // 3), max(1, 2 * wafers // 3), wafers}):
        previous = inputs.previous and (inputs.previous[0], first_wafers(inputs.previous[1], count))
        subset = replace(inputs, dies=first_wafers(inputs.dies, count), previous=previous)
        with tempfile.TemporaryDirectory() as folder:
            started, cpu = time.perf_counter(), time.process_time()
            facts = report_page.render_report(subset, Path(folder))
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        maps = facts["rows"]["wafers"] + facts["rows"]["previous_day_wafers"]
        rows.append({"wafers": count, "wafer_maps": maps, "seconds": round(seconds, 2),
                     "cpu_seconds": round(cpu, 2), "cpu_seconds_per_map": round(cpu / maps, 3)})  # fmt: skip
    return rows
