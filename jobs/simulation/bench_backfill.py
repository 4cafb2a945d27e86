"""`scripts/bench backfill`: the wafer-yield workflow over `--days` demo-scale days (3 fabs; 90 by
default) from an empty data root, through luigid with 1 and 2 workers and with the local scheduler
and 1 worker: wall time, the speed-up of the second worker, and luigid's overhead per task (its
wall time less the local scheduler's, per task run). Every run starts from the floor alone."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from jobs.simulation.bench_tools import INPUTS, PIPELINE_START, measure_range, simulate_floor, sizes


def backfill(args: argparse.Namespace) -> dict:
    root = Path(args.cache) / "backfill"
    first = dt.date.fromisoformat(PIPELINE_START)
    stop = f"{first + dt.timedelta(days=args.days)}"
    configs = [("local", 1), ("luigid", 1), ("luigid", 2)]
    # nobody approves in a benchmark: the first validated model serves at once, as in the demo
    extra = ("--wafer-yield-min-devices", str(args.min_devices), "--models-auto-approve")
    with tqdm(
        total=1 + len(configs), desc="bench backfill", unit="step", file=sys.stderr, disable=args.quiet
    ) as bar:
        bar.set_postfix_str(f"simulating {args.days} days")
        # one more day: the last day's final-test labels land on it
        simulate_floor(root, args.days + 1, "--scale", args.scale or "demo", *sizes(args))
        bar.update()
        files = sorted((root / "landing").glob("*/*/*.stdf.gz"))
        runs = {}
        for scheduler, workers in configs:
            bar.set_postfix_str(f"{scheduler}, {workers} worker(s)")
            _empty(root)
            runs[f"{scheduler}_{workers}"] = measure_range(
                root, PIPELINE_START, stop, files, workers, scheduler, extra
            )
            bar.update()
    local, one, two = runs["local_1"], runs["luigid_1"], runs["luigid_2"]
    for run in runs.values():
        run["seconds_per_day"] = round(run["seconds"] / args.days, 2)
    return {
        "benchmark": "backfill",
        "cpu_count": os.cpu_count(),
        "days": args.days,
        "range": [PIPELINE_START, stop],
        "scale": args.scale or "demo",
        "files": len(files),
        "runs": runs,
        "speedup_2_vs_1_worker_luigid": round(one["seconds"] / two["seconds"], 2),
        "luigid_overhead_seconds_per_task": round(
            (one["seconds"] - local["seconds"]) / max(one["tasks"], 1), 3
        ),
        "note": "wall = the whole luigi command, start-up included; each run from an empty data root "
        "(the floor alone); overhead per task = (luigid 1 worker - local 1 worker) / tasks run",
    }


def _empty(root: Path) -> None:
    for entry in root.iterdir():
        if entry.name not in INPUTS:
            shutil.rmtree(entry)
