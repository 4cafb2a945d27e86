"""`scripts/bench pipeline|merge|quality`: the workflows as a user runs them. The wafer-yield day
from landing zone to predictions (and the no-op RangeDaily), the fab merge's hours per minute
(and the no-op RangeHourly), the quality monitor's files per second in one window."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from jobs.simulation.bench_tools import PIPELINE_START, REPO, luigi_range, simulate_floor


def _stage_seconds(root: Path, day: str) -> dict[str, float]:
    """Seconds each stage of one day took, from its manifests (conversions: summed over files)."""
    seconds: dict[str, float] = {}
    for manifest in root.glob(f"*/v*/date={day}/**/manifest.json"):
        stage = manifest.relative_to(root).parts[0]
        seconds[stage] = seconds.get(stage, 0.0) + json.loads(manifest.read_text())["seconds"]
    ingested = [json.loads(m.read_text()) for m in root.glob(f"ingest/v*/date={day}/*/manifest.json")]
    shas = {f["sha256"] for m in ingested for f in m.get("files", [])}
    seconds["converted (sum over files)"] = sum(
        json.loads(m.read_text())["seconds"]
        for sha in shas
        for m in root.glob(f"converted/v*/{sha}/manifest.json")
    )
    return {k: round(v, 2) for k, v in sorted(seconds.items())}


def pipeline(args: argparse.Namespace) -> dict:
    """A demo-scale day (3 fabs, ~30K dies) from the landing zone to predictions, after a week of
    history so that it trains, validates and deploys; and the no-op RangeDaily over 30 done days."""
    import datetime as dt

    cache = Path(args.cache) / "pipeline"
    week_root, month_root = cache / "week", cache / "month"
    first = dt.date.fromisoformat(PIPELINE_START)
    day = lambda n: f"{first + dt.timedelta(days=n)}"  # noqa: E731

    simulate_floor(week_root, 8)
    week_seconds, _ = luigi_range(week_root, day(0), day(7), workers=2)
    day_seconds, _ = luigi_range(week_root, day(7), day(8), workers=2)
    summary = json.loads(
        next(week_root.glob(f"wafer_yield_daily/v*/date={day(7)}/manifest.json")).read_text()
    )

    month = ("2026-10-01", "2026-10-31")  # 30 days, all past their landing deadlines
    simulate_floor(month_root, 30, "--fabs", "fab1", "--lots", "1", "--wafers", "1", start=month[0])
    one_fab = ("--wafer-yield-fabs", "fab1")
    luigi_range(month_root, *month, workers=2, extra=one_fab)
    noop_seconds, _ = luigi_range(month_root, *month, workers=1, extra=one_fab)
    return {
        "day": {
            "date": day(7),
            "dies": summary["dies"],
            "decision": summary["decision"],
            "seconds": round(day_seconds, 1),
            "goal_seconds": 60,
            "ratio_to_goal": round(day_seconds / 60, 2),
            "stage_seconds": _stage_seconds(week_root, day(7)),
        },
        "week_before_seconds": round(week_seconds, 1),
        "noop_range_30_days": {
            "seconds": round(noop_seconds, 2),
            "goal_seconds": 5,
            "ratio_to_goal": round(noop_seconds / 5, 2),
            "note": "whole luigi command, start-up included; a 1-fab floor (the check reads manifests only)",
        },
        "workers": 2,
    }


MERGE_STAGES = ("fab_hour", "reference", "normalize", "feature_store", "fab_merge_hourly")


def merge(args: argparse.Namespace) -> dict:
    """Hours per minute merged at demo scale (3 fabs) with 1 and 2 workers, from conversions that
    exist (every workflow shares them), and the no-op RangeHourly check over 90 days of hours."""
    import datetime as dt

    root = Path(args.cache) / "merge"
    first = dt.date.fromisoformat(PIPELINE_START)
    start, stop = f"{first + dt.timedelta(days=1)}T00", f"{first + dt.timedelta(days=2)}T00"
    simulate_floor(root, 2)
    converted, _ = luigi_range(root, start, stop, 2, "FabMergeHourly")  # also converts the files
    rates = {}
    for workers in (1, 2):
        for stage in MERGE_STAGES:
            shutil.rmtree(root / stage, ignore_errors=True)
        seconds, _ = luigi_range(root, start, stop, workers, "FabMergeHourly")
        rates[f"workers_{workers}"] = {
            "seconds_24_hours": round(seconds, 1),
            "hours_per_minute": round(1440 / seconds, 1),
        }
    return {
        "benchmark": "merge",
        "cpu_count": os.cpu_count(),
        "floor": "3 fabs at demo scale (30K dies a day): the second day merged, the first its reference",
        "first_run_with_conversions_seconds": round(converted, 1),
        "merge": rates,
        "speedup_2_vs_1_worker": round(
            rates["workers_2"]["hours_per_minute"] / rates["workers_1"]["hours_per_minute"], 2
        ),
        "noop_range_90_days": _noop_hourly_check(root, start[:10]),
    }


def _noop_hourly_check(root: Path, merged_day: str) -> dict:
    """Time `luigi ... RangeHourly` over 90 days of complete hours. The 2160 hour summaries are
    copies of a real one (the check reads only those); the command is the real one."""
    import datetime as dt

    summaries = next((root / "fab_merge_hourly").glob("v*"))
    template = next(summaries.glob(f"date={merged_day}/hour=00/manifest.json")).read_text()
    start = dt.datetime(2026, 6, 1)
    for h in range(90 * 24):
        folder = summaries / f"{start + dt.timedelta(hours=h):date=%Y-%m-%d/hour=%H}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifest.json").write_text(template)
    stop = start + dt.timedelta(days=90)
    seconds, _ = luigi_range(root, f"{start:%Y-%m-%dT%H}", f"{stop:%Y-%m-%dT%H}", 1, "FabMergeHourly")
    return {
        "seconds": round(seconds, 2),
        "goal_seconds": 10,
        "ratio_to_goal": round(seconds / 10, 2),
        "hours": 90 * 24,
        "note": "whole luigi command, start-up included; the hour summaries are copies of a real one",
    }


def quality(args: argparse.Namespace) -> dict:
    """Files and MB checked per second by the quality monitor, for one window holding 200 demo-scale
    files (the 10-day floor's files all given upload times inside it). Conversions and the
    references are made first, untimed: every workflow shares them."""
    import datetime as dt

    root = Path(args.cache) / "quality"
    simulate_floor(root, 10)
    window = dt.datetime.fromisoformat(PIPELINE_START) + dt.timedelta(days=10)
    files = sorted(p for p in (root / "landing").glob("*/*/*.stdf.gz"))[:200]
    for i, path in enumerate(files):
        os.utime(path, (window.timestamp() + i, window.timestamp() + i))
    common = ["--local-scheduler", "--paths-root", str(root), "--log-level", "WARNING", "--workers", "2"]
    luigi_cli = [sys.executable, "-m", "luigi", "--module", "jobs.quality_monitor"]
    for fab in ("fab1", "fab2", "fab3"):
        prepare = [*luigi_cli, "MonitorReference", "--fab", fab, "--date", f"{window:%Y-%m-%d}", *common]
        subprocess.run(prepare, check=True, capture_output=True, cwd=REPO)
    convert = [
        *luigi_cli,
        "QualityMonitor",
        "--window",
        f"{window:%Y-%m-%dT%H%M}",
        *common,
        "--quality-monitor-window-minutes",
        "1440",
    ]
    shutil.rmtree(root / "quality_monitor", ignore_errors=True)
    subprocess.run(convert, check=True, capture_output=True, cwd=REPO)  # converts every file once
    shutil.rmtree(root / "quality_monitor", ignore_errors=True)
    quarantined = root / "quarantine"
    for held in quarantined.rglob("*.stdf.gz") if quarantined.exists() else []:
        shutil.move(held, json.loads(held.with_name(held.name + ".reason.json").read_text())["from"])
    started = time.perf_counter()
    subprocess.run(convert, check=True, capture_output=True, cwd=REPO)
    seconds = time.perf_counter() - started
    checked = json.loads(next((root / "quality_monitor").glob("v*/*/*/manifest.json")).read_text())["files"]
    if checked < len(files):  # (a final-test file of the floor may land inside the window too)
        raise SystemExit(f"scripts/bench quality: the window checked {checked} files, not {len(files)}")
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    return {
        "benchmark": "quality",
        "cpu_count": os.cpu_count(),
        "window_files": checked,
        "window_megabytes_gz": round(megabytes, 1),
        "seconds": round(seconds, 1),
        "files_per_second": round(checked / seconds, 1),
        "mb_per_second_gz": round(megabytes / seconds, 2),
        "note": "whole luigi command, start-up included; conversions and references existed",
    }
