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
from jobs.simulation.bench_ingest import ingest
from jobs.simulation.bench_model import model
from jobs.simulation.bench_report import report
from jobs.simulation.bench_tools import REPO
from jobs.simulation.bench_workflows import merge, pipeline, quality

BENCHMARKS = {
    "ingest": ingest, "model": model, "pipeline": pipeline, "merge": merge, "quality": quality,
    "report": report,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS))
    parser.add_argument(
        "--cache", default=str(REPO / "bench-out"), help="where simulated bench files are kept"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
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
