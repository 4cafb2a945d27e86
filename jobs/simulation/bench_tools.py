"""What several benchmarks of scripts/bench share: the repo, the simulated floors they start
from, and the workflows run as a user types them (`luigi ... RangeDaily`, `RangeHourly`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PIPELINE_START = "2026-11-01"


def luigi_range(
    root: Path, start: str, stop: str, workers: int, of: str = "WaferYieldDaily", extra: tuple[str, ...] = ()
) -> tuple[float, subprocess.CompletedProcess]:
    """`luigi ... RangeDaily --of WaferYieldDaily` (or RangeHourly --of FabMergeHourly) as a user
    types it; wall seconds and the finished process."""
    daily = of == "WaferYieldDaily"
    module, range_task = ("jobs.wafer_yield", "RangeDaily") if daily else ("jobs.fab_merge", "RangeHourly")
    command = [
        sys.executable, "-m", "luigi", "--module", module,
        range_task, "--of", of, "--start", start, "--stop", stop,
        "--local-scheduler", "--workers", str(workers), "--paths-root", str(root), "--log-level", "WARNING",
        *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"scripts/bench: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started, done


def simulate_floor(root: Path, days: int, *extra: str, start: str = PIPELINE_START) -> None:
    from jobs.simulation.simulate import main as simulate

    shutil.rmtree(root, ignore_errors=True)
    simulate(["--root", str(root), "--start", start, "--days", str(days), "--quiet", *extra])
