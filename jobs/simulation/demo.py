"""The demo behind scripts/demo: a simulated week of the test floor through all three workflows.

Simulates three fabs for a week (a corrupted file, a resent file, a fab offline for a day, and
on the last day a file with impossible values), runs `RangeDaily --of WaferYieldDaily` over it
with the local scheduler and prints what was decided each day and why (the model lifecycle with
auto-approval, and the registry it leaves); fills the feature store
for the last day with `RangeHourly --of FabMergeHourly` (one line per hour); runs the quality
monitor over the last day (`RangeByMinutes --of QualityMonitor`), which quarantines the bad
file; renders the run history (`scripts/dashboard`) and prints what to open next. Data lives
under the repo's `data/` (or --root); a second run reuses everything that exists. `--days` and
`--wafers` make a smaller floor (the README test builds one with `--wafers 1`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import luigi
import luigi.configuration
from luigi.tools.range import RangeByMinutes, RangeDaily, RangeHourly

from jobs.domain import registry
from jobs.fab_merge import FabMergeHourly
from jobs.files import read_json
from jobs.ops.alerts import alerts_file
from jobs.ops.dashboard import render as render_dashboard
from jobs.ops.models import version_table
from jobs.ops.quarantine import held
from jobs.pipeline.landing import is_ready
from jobs.pipeline.settings import merge as merge_settings
from jobs.pipeline.settings import models, paths, quality_monitor, wafer_yield
from jobs.pipeline.stages import stage_dir
from jobs.quality_monitor import QualityMonitor
from jobs.simulation.simulate import main as simulate_main
from jobs.wafer_yield import Lifecycle, WaferYieldDaily, YieldReport

FIRST_DAY = dt.date(2026, 11, 14)
DAYS = 7


def faults(first: dt.date, days: int) -> str:
    """The week's faults (those whose day the floor has), and a file with impossible values on
    the last day for the quality monitor to quarantine."""
    kinds = {2: "corrupted:fab1", 3: "duplicated:fab3", 4: "offline:fab2", days - 1: "outlier:fab1"}
    return ",".join(
        f"{kind}:{first + dt.timedelta(days=i):%Y-%m-%d}" for i, kind in kinds.items() if i < days
    )


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
    parser.add_argument("--wafers", type=int, help="wafers per lot (default: the simulator's demo scale, 7)")
    args = parser.parse_args(argv)
    if args.root:
        luigi.configuration.get_config().set("paths", "root", str(Path(args.root).resolve()))
    luigi.configuration.get_config().set("models", "auto_approve", "true")  # nobody to ask in a demo
    root = paths().root_path()
    last = args.start + dt.timedelta(days=args.days - 1)

    if simulated(args.start, args.days):
        print(f"simulated floor {args.start}..{last} already in {root}/landing")
    else:
        print(f"simulating {args.start}..{last} for {wafer_yield().fabs} into {root}/landing ...")
        simulate_main(
            ["--root", str(root), "--start", f"{args.start}", "--days", str(args.days),
             "--fabs", wafer_yield().fabs, "--faults", faults(args.start, args.days),
             *(["--wafers", str(args.wafers)] if args.wafers else [])]
        )  # fmt: skip

    started = time.perf_counter()
    week = RangeDaily(
        of=WaferYieldDaily, start=args.start, stop=last + dt.timedelta(days=1), param_name="date"
    )
    ok = luigi.build([week], local_scheduler=True, workers=args.workers, log_level="WARNING")
    print(f"\nwafer-yield workflow over {args.days} days: {time.perf_counter() - started:.1f} s "
          f"({'ok' if ok else 'FAILED'})\n")  # fmt: skip
    summarize([args.start + dt.timedelta(days=i) for i in range(args.days)])
    print_registry()

    started = time.perf_counter()
    first_hour = dt.datetime.combine(last, dt.time())
    hours = RangeHourly(
        of=FabMergeHourly, start=first_hour, stop=first_hour + dt.timedelta(days=1), param_name="hour"
    )
    merged = luigi.build([hours], local_scheduler=True, workers=args.workers, log_level="WARNING")
    print(f"\nfab merge of {last}, hour by hour: {time.perf_counter() - started:.1f} s "
          f"({'ok' if merged else 'FAILED'})\n")  # fmt: skip
    summarize_hours([first_hour + dt.timedelta(hours=h) for h in range(24)])

    started = time.perf_counter()
    windows = RangeByMinutes(
        of=QualityMonitor, start=first_hour, stop=first_hour + dt.timedelta(days=1), param_name="window",
        minutes_interval=quality_monitor().window_minutes,
    )  # fmt: skip
    watched = luigi.build([windows], local_scheduler=True, workers=args.workers, log_level="WARNING")
    print(f"\nquality monitor over {last}, window by window: {time.perf_counter() - started:.1f} s "
          f"({'ok' if watched else 'FAILED'})\n")  # fmt: skip
    summarize_windows(last)
    page = render_dashboard(root)[-1]
    print_next(root, last, page)
    return 0 if ok and merged and watched else 1


def print_next(root: Path, last: dt.date, page: Path) -> None:
    """What to open next (the README's "After the demo" says more about each)."""
    summary = WaferYieldDaily(date=last).output().path
    day = f"date={last:%Y-%m-%d}"
    print(f"""
outputs under {root}; alerts in {alerts_file()}. Open next (source .venv/bin/activate first):
  the day's summary      {summary}
  the yield report       {YieldReport(date=last).folder() / "index.html"}
  predictions, wafers    {stage_dir("score")}/{day}/
  the feature store      {stage_dir("feature_store")}/
  the quality monitor    {stage_dir("monitor")}/{day}/window=*/report.html ; scripts/quarantine list
  the run history        {page} (scripts/dashboard)
  the visualizer         scripts/luigid start, then http://127.0.0.1:8082/static/visualiser/index.html""")


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
                f"served by {served(s['lifecycle'])}, {s['low_yield_wafers']} wafer(s) below the floor"
            )
        if WaferYieldDaily(date=day).complete():
            notes += [model_line(e) for e in Lifecycle(date=day).manifest()["happened"]]
        for note in notes:
            print(f"{'':12}{note}")


def served(plan: dict) -> str:
    text = f"v{plan['champion']}"
    if plan["challenger"] is not None:
        share = plan["rollout_share"]
        text += f" and v{plan['challenger']} " + (f"on {share:.0%} of the wafers" if share else "in shadow")
    return text


def model_line(event: dict) -> str:
    """One event of the day's lifecycle, for a person."""
    action, version = event["action"], event.get("version")
    text = {"rollout": f"v{version} rolls out to {event.get('share', 0):.0%} of the wafers",
            "champion": f"v{version} is the champion ({event.get('why', '')})",
            "challenger": f"v{version} is the challenger ({event.get('why', '')})",
            "approved": f"v{version} approved by {event.get('by')}"}.get(action)  # fmt: skip
    why = event.get("why", "")
    return f"model: {text or f'{action} v{version}: {why}'}"


def print_registry() -> None:
    """The registry the week left (scripts/models list), and how to see it in MLflow."""
    store = models().store()
    print(f"\nthe model registry ({store.model_name}, {store.uri}):")
    print("\n".join(f"  {line}" for line in version_table(registry.versions(store))))
    print(
        f"  scripts/models history; in MLflow's own UI: .venv/bin/mlflow ui --backend-store-uri {store.uri}"
    )


def summarize_windows(day: dt.date) -> None:
    """How many windows and files the monitor checked, and what it set aside."""
    reports = sorted((stage_dir("monitor") / f"date={day:%Y-%m-%d}").glob("window=*/manifest.json"))
    checked = [read_json(p) for p in reports]
    files = sum(m.get("files", 0) for m in checked)
    print(f"{len(checked)} windows, {files} files checked")
    for entry in held():  # quarantine/{workflow}/{fab}/{date}/NAME
        path = Path(entry["file"])
        if path.parent.name == f"{day:%Y-%m-%d}" and path.parents[2].name == "quality_monitor":
            why = "; ".join(f"{c['name']}: {c['message']}" for c in entry.get("checks", []))
            print(f"{'':12}quarantined {path.name}: {why}")


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
