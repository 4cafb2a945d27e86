"""Benchmarks behind scripts/bench; each prints its figures as JSON on stdout.

    scripts/bench ingest     STDF reading: our arrow and pystdf engines against stdf-convert's raw
                             streaming parse, on lot2, lot3 and simulated bench-scale wafer files
    scripts/bench model      the daily yield model on a simulated floor (16 days x 3 fabs, cached in
                             CACHE/model-floor): trained on 14 days, scored on the 2 unseen days
                             against the oracle AUC and a logistic regression
    scripts/bench pipeline   the wafer-yield workflow: a demo-scale day (3 fabs) from landing zone
                             to predictions after a week of history, and the no-op RangeDaily
                             over 30 complete days
    scripts/bench merge      the fab merge: hours merged per minute with 1 and 2 workers, and the
                             no-op RangeHourly over 90 days of hours
    scripts/bench quality    the quality monitor: files and MB checked per second in a window of
                             200 demo-scale files
    scripts/bench report     the daily yield report (YieldReport) of a demo-scale day (3 fabs, 3
                             days simulated so the last is scored), and its time per wafer drawn
    scripts/bench scale      a bench-scale day (3 fabs, ~100 MB of gzipped STDF per wafer) from
                             landing to predictions: local scheduler with 1 and 2 workers, luigid
                             with 2; against stdf-convert's raw parse of the day per worker; one
                             wafer converted end to end against its raw parse (goals in "goals")
    scripts/bench backfill   the wafer-yield workflow over --days demo-scale days (default 90)
                             through luigid with 1 and 2 workers, and with the local scheduler:
                             wall time, speed-up, luigid's overhead per task

Every figure is measured in the same run as its reference, in separate processes (so peak RSS
is each one's own), and reported with the ratio: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable

from jobs.files import json_text
from jobs.simulation.bench_backfill import backfill
from jobs.simulation.bench_ingest import ingest
from jobs.simulation.bench_model import model
from jobs.simulation.bench_report import report
from jobs.simulation.bench_scale import scale
from jobs.simulation.bench_tools import REPO
from jobs.simulation.bench_workflows import merge, pipeline, quality

BENCHMARKS = {
    "ingest": ingest, "model": model, "pipeline": pipeline, "merge": merge, "quality": quality,
    "report": report, "scale": scale, "backfill": backfill,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS))
    parser.add_argument(
        "--cache", default=str(REPO / "bench-out"), help="where simulated bench files are kept"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    sizes = parser.add_argument_group("scale and backfill")
    sizes.add_argument("--days", type=int, default=90, help="backfill: days of the backfill (default 90)")
    sizes.add_argument("--scale", choices=["bench", "demo"], default=None,
                       help="the simulator's preset (scale: bench, backfill: demo)")  # fmt: skip
    sizes.add_argument("--lots", type=int, default=0, help="lots per fab and day (default: the preset's)")
    sizes.add_argument("--wafers", type=int, default=0, help="wafers per lot (default: the preset's)")
    sizes.add_argument(
        "--min-devices", type=int, default=1000, help="[wafer_yield] min_devices for the runs (default 1000)"
    )
    args = parser.parse_args(argv)
    figures = only_json_on_stdout(BENCHMARKS[args.benchmark], args)
    print(json_text(figures), end="", flush=True)
    return 0


def only_json_on_stdout(benchmark: Callable[[argparse.Namespace], dict], args: argparse.Namespace) -> dict:
    """Run `benchmark` with file descriptor 1 pointing at stderr, so that nothing it or its child
    processes print (the simulator's first-run notes, luigi) lands before the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return benchmark(args)
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


if __name__ == "__main__":
    sys.exit(main())
