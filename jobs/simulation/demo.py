"""The demo behind scripts/demo: a simulated week of the test floor through both workflows.

Simulates three fabs for a week (with a corrupted file, a resent file and a fab offline for a
day), runs `RangeDaily --of WaferYieldDaily` over it with the local scheduler and prints what
was decided each day and why; then fills the feature store for the week's last day with
`RangeHourly --of FabMergeHourly` and prints one line per hour; last it renders the run history
(`scripts/dashboard`). Data lives under the repo's `data/` (or --root); a second run reuses
everything that exists.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import luigi
import luigi.configuration
from luigi.tools.range import RangeDaily, RangeHourly

from jobs.fab_merge import FabMergeHourly
from jobs.files import read_json
from jobs.ops.alerts import alerts_file
from jobs.ops.dashboard import render as render_dashboard
from jobs.pipeline.landing import is_ready
from jobs.pipeline.settings import merge as merge_settings
from jobs.pipeline.settings import paths, wafer_yield
from jobs.pipeline.stages import stage_dir
from jobs.simulation.simulate import main as simulate_main
from jobs.wafer_yield import WaferYieldDaily, YieldReport

FIRST_DAY = dt.date(2026, 11, 14)
DAYS = 7


def faults(first: dt.date) -> str:
    day = [f"{first + dt.timedelta(days=i):%Y-%m-%d}" for i in range(DAYS)]
    return f"corrupted:fab1:{day[2]},duplicated:fab3:{day[3]},offline:fab2:{day[4]}"


def simulated(first: dt.date, days: int) -> bool:
    """Whether every day of the week has landed (an offline fab-day has no folder at all)."""
    fabs = wafer_yield().fab_list()
    return all(any(is_ready(fab, first + dt.timedelta(days=i)) for fab in fabs) for i in range(days))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    parser.add_argument("--root", help="data root (default: [paths] root in luigi.cfg, i.e. data/)")
    parser.add_argument("--start", type=dt.date.fromisoformat, default=FIRST_DAY, help="first day")
    parser.add_argument("--days", type=int, default=DAYS)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.root:
        luigi.configuration.get_config().set("paths", "root", str(Path(args.root).resolve()))
    root = paths().root_path()
    last = args.start + dt.timedelta(days=args.days - 1)

    if simulated(args.start, args.days):
        print(f"simulated floor {args.start}..{last} already in {root}/landing")
    else:
        print(f"simulating {args.start}..{last} for {wafer_yield().fabs} into {root}/landing ...")
        simulate_main(
            ["--root", str(root), "--start", f"{args.start}", "--days", str(args.days),
             "--fabs", wafer_yield().fabs, "--faults", faults(args.start)]
        )  # fmt: skip

    started = time.perf_counter()
    week = RangeDaily(
        of=WaferYieldDaily, start=args.start, stop=last + dt.timedelta(days=1), param_name="date"
    )
    ok = luigi.build([week], local_scheduler=True, workers=args.workers, log_level="WARNING")
    print(f"\nwafer-yield workflow over {args.days} days: {time.perf_counter() - started:.1f} s "
          f"({'ok' if ok else 'FAILED'})\n")  # fmt: skip
    summarize([args.start + dt.timedelta(days=i) for i in range(args.days)])

    started = time.perf_counter()
    first_hour = dt.datetime.combine(last, dt.time())
    hours = RangeHourly(
        of=FabMergeHourly, start=first_hour, stop=first_hour + dt.timedelta(days=1), param_name="hour"
    )
    merged = luigi.build([hours], local_scheduler=True, workers=args.workers, log_level="WARNING")
    print(f"\nfab merge of {last}, hour by hour: {time.perf_counter() - started:.1f} s "
          f"({'ok' if merged else 'FAILED'})\n")  # fmt: skip
    summarize_hours([first_hour + dt.timedelta(hours=h) for h in range(24)])
    page = render_dashboard(root)[-1]
    print(f"\noutputs under {root}; feature store in {stage_dir('feature_store')}; alerts in {alerts_file()}")
    print(f"run history: {page} (scripts/dashboard)")
    print(f"yield report of {last}: {YieldReport(date=last).folder() / 'index.html'}")
    return 0 if ok and merged else 1


def summarize(days: list[dt.date]) -> None:
    print(f"{'day':10}  {'fabs':14} {'dies':>6}  {'gate':6}  decision")
    for day in days:
        task = WaferYieldDaily(date=day)
        if not task.complete():
            print(f"{day}  not complete")
            continue
        s = read_json(Path(task.output().path))
        fabs = ",".join(s["fabs"]) + (f" -{','.join(s['offline_fabs'])}" if s["offline_fabs"] else "")
        gate = "passed" if s["quality_gate"] == "passed" else "FAILED"
        print(
            f"{day}  {fabs:14} {s['dies']:6d}  {gate:6}  {s['decision']}"
            + (f": {s['why']}" if s["why"] else "")
        )
        notes = []
        if s["offline_fabs"]:
            notes.append(f"offline: {', '.join(s['offline_fabs'])}")
        if s["quarantined"]:
            notes.append(f"quarantined: {', '.join(s['quarantined'])}")
        if s.get("resent"):
            notes.append(f"resent (same sha256, read once): {', '.join(s['resent'])}")
        if s["scored"] == "scored":
            notes.append(
                f"scored by the model of {s['production']}, {s['low_yield_wafers']} wafer(s) below the floor"
            )
        for note in notes:
            print(f"{'':12}{note}")


def summarize_hours(hours: list[dt.datetime]) -> None:
    fabs = merge_settings().fab_list()
    print(f"{'hour (UTC)':16}  " + "  ".join(f"{fab:>6}" for fab in fabs) + "  missing")
    for hour in hours:
        task = FabMergeHourly(hour=hour)
        if not task.complete():
            print(f"{hour:%Y-%m-%d %H}:00  not complete")
            continue
        merged = task.manifest()
        dies = "  ".join(f"{merged['rows'].get(fab, 0):6d}" for fab in fabs)
        print(f"{hour:%Y-%m-%d %H}:00  {dies}  {', '.join(merged['missing_fabs']) or '-'}")


if __name__ == "__main__":
    sys.exit(main())
