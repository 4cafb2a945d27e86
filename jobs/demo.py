"""The demo behind scripts/demo: a simulated test-floor day, converted by Luigi, summarized.

Runs with the local scheduler and keeps its data under the repo's `data/` (or --root).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import luigi
import luigi.configuration

from .config import paths
from .simulate import main as simulate_main
from .tasks import ConvertFile, ConvertLandingDay, landed_files

DEMO_DATE = dt.date(2026, 11, 20)
FABS = ("fab1", "fab2", "fab3")


def _simulated(root: Path, date: dt.date) -> bool:
    return all((root / "landing" / fab / f"{date:%Y-%m-%d}" / "_READY").exists() for fab in FABS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    parser.add_argument("--root", help="data root (default: [paths] root in luigi.cfg, i.e. data/)")
    parser.add_argument("--date", type=dt.date.fromisoformat, default=DEMO_DATE)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.root:
        luigi.configuration.get_config().set("paths", "root", str(Path(args.root).resolve()))
    root = paths().root_path()

    if _simulated(root, args.date):
        print(f"simulated floor for {args.date} already in {root}/landing")
    else:
        print(f"simulating {args.date} for {', '.join(FABS)} into {root}/landing ...")
        simulate_main(
            ["--root", str(root), "--start", f"{args.date}", "--days", "1", "--fabs", ",".join(FABS)]
        )

    started = time.perf_counter()
    ok = luigi.build(
        [ConvertLandingDay(date=args.date)], local_scheduler=True, workers=args.workers, log_level="INFO"
    )
    print(f"\nconverted in {time.perf_counter() - started:.1f} s ({'ok' if ok else 'FAILED'})\n")
    _summarize(root, args.date)
    return 0 if ok else 1


def _summarize(root: Path, date: dt.date) -> None:
    print(f"{'fab':6} {'files':>5} {'dies':>7} {'results':>10} {'ws yield':>9}  tester(s)")
    for fab in FABS:
        day = root / "landing" / fab / f"{date:%Y-%m-%d}"
        files = [f for f in landed_files(day) if not f.name.startswith("FT_")] if day.exists() else []
        manifests = [json.loads(Path(ConvertFile(path=str(f)).output().path).read_text()) for f in files]
        results = sum(m["rows"]["results"] for m in manifests)
        dies = [_final_die_results(Path(ConvertFile(path=str(f)).output().path).parent) for f in files]
        tested = sum(len(d) for d in dies)
        good = sum(int(d.sum()) for d in dies)
        testers = sorted({m["file"]["node"] for m in manifests})
        yield_text = f"{100 * good / tested:8.1f}%" if tested else "       -"
        print(f"{fab:6} {len(files):5d} {tested:7d} {results:10d} {yield_text}  {', '.join(testers)}")


def _final_die_results(converted: Path):
    """passed per die, where a retested die counts once, with its last test."""
    import pandas as pd

    parts = pd.read_parquet(
        converted / "parts.parquet", columns=["wafer_id", "x_coord", "y_coord", "retest", "passed"]
    )
    last = parts.sort_values("retest").groupby(["wafer_id", "x_coord", "y_coord"]).tail(1)
    return last["passed"].fillna(False).astype(bool)


if __name__ == "__main__":
    sys.exit(main())
