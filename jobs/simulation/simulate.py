"""The simulated test floor's command line: wafer-sort and final-test STDF for a few fabs, and the truth.

    python -m jobs.simulation.simulate --root data --start 2026-11-16 --days 7            # demo floor, 3 fabs
    python -m jobs.simulation.simulate --root /tmp/b --start 2026-11-16 --days 1 --fabs fab1 \\
        --scale bench --lots 1 --wafers 1                                       # one ~100 MB file

The model of the floor and the fault grammar: jobs/simulation/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from jobs.simulation.faults import FAULT_GRAMMAR, FAULT_KINDS, parse_date, parse_faults
from jobs.simulation.floor import FABS, PRESETS
from jobs.simulation.run import Run, simulate


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints the usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_run(args: argparse.Namespace) -> Run:
    """Check the command line and turn it into a Run (ValueError with a one-line message)."""
    start = parse_date(args.start)
    fabs = tuple(f.strip() for f in args.fabs.split(",") if f.strip())
    unknown = [f for f in fabs if f not in FABS]
    if unknown or not fabs:
        raise ValueError(f"unknown fab {', '.join(unknown) or '(none)'} (known: {', '.join(FABS)})")
    scale = PRESETS[args.scale]
    scale = replace(scale, lots=args.lots or scale.lots, wafers=args.wafers or scale.wafers)
    if scale.wafers > 25:
        raise ValueError(f"--wafers {scale.wafers}: a lot has at most 25 wafers")
    if scale.lots > 26 * 99:
        raise ValueError(f"--lots {scale.lots}: at most {26 * 99} lots per fab and day")
    faults = parse_faults(args.faults)
    days = tuple(start + dt.timedelta(days=i) for i in range(args.days))
    for fault in faults:
        if fault.fab not in fabs or fault.last < days[0] or fault.first > days[-1]:
            print(f"simulate: warning: fault {fault.text} hits no simulated fab-day", file=sys.stderr)
    return Run(Path(args.root), days, fabs, scale, args.seed, tuple(faults))


def _faults_help() -> str:
    lines = ["faults (--faults KIND:FAB:DATE[..DATE][:PARAM],...):"]
    for kind, spec in FAULT_KINDS.items():
        param = f" PARAM: {spec.param}." if spec.param else ""
        lines.append(f"  {kind:<11} {spec.what}.{param}")
    lines.append("example: --faults offline:fab2:2026-11-18,localtime:fab2:2026-11-01..2026-11-30:+8")
    lines.append("         --faults dialect:fab3:2026-11-16..2026-11-22")
    lines.append(
        "         --faults missing:fab1:2026-11-17:5,outlier:fab2:2026-11-18,drift:fab3:2026-11-19:-2"
    )
    lines.append("         --faults shift:fab1:2026-11-19..2026-11-30,shift:fab2:2026-11-19..2026-11-30:0.5")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(
        prog="simulate",
        description="Wafer-sort and final-test STDF in ROOT/landing, truth in ROOT/truth",
        epilog=_faults_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", required=True, help="data root (landing/ and truth/ are created below it)")
    parser.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--days", type=_positive, required=True, help="number of days")
    parser.add_argument("--fabs", default=",".join(FABS), help=f"comma-separated (default {','.join(FABS)})")
    parser.add_argument("--scale", choices=sorted(PRESETS), default="demo", help="preset (default demo)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--lots", type=_positive, help="lots per fab and day (overrides the preset)")
    parser.add_argument("--wafers", type=_positive, help="wafers per lot, 1..25 (overrides the preset)")
    parser.add_argument("--faults", default="", help="faults to inject: " + FAULT_GRAMMAR)
    parser.add_argument("--jobs", type=_positive, help="worker processes (default: one per CPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        run = build_run(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        summary = simulate(run, progress=not args.quiet, jobs=args.jobs)
    except OSError as exc:  # e.g. a root we may not write to
        print(f"simulate: error: {exc}", file=sys.stderr)
        return 1
    aucs = [d["auc"] for d in summary["oracle"]["days"].values() if d["auc"] is not None]
    auc = f"; oracle AUC {min(aucs):.3f}..{max(aucs):.3f}" if aucs else ""
    print(
        f"simulated {len(run.fabs)} fab(s) x {len(run.days)} day(s): {summary['wafers']} wafers, "
        f"{len(summary['faults'])} fault(s) in {summary['seconds']:.1f} s{auc} -> {run.root}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
