"""Service levels: when each workflow's run for a period must be done, and the check that alerts
once per miss.

A period is what the workflow's summary task is for: a day (WaferYieldDaily, run at 02:00 the
next morning, due by 06:00), an hour (FabMergeHourly, due 2 hours after the hour ends) or a
15-minute window (QualityMonitor, due 15 minutes after it ends). The check runs with every
scheduled run (`python -m jobs.ops.schedules`), looks at the periods whose deadline passed within
`[sla] lookback_hours`, and records a miss when the summary was not done by its deadline:
still running, not done, or finished late. Each miss is recorded once in the run history's
`sla_misses` table and alerted once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import dataclass

import luigi
import pandas as pd

from jobs.ops.alerts import alert
from jobs.ops.history import connect, read_runs
from jobs.ops.workflows import Workflow, workflow
from jobs.pipeline.settings import comma_list, sla

# --- the check ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Miss:
    workflow: str
    period: str
    deadline: dt.datetime
    reason: str

    def __str__(self) -> str:
        return f"{self.workflow} {self.period} was due {self.deadline:%Y-%m-%d %H:%M} UTC: {self.reason}"


def classify(
    deadline: dt.datetime, now: dt.datetime, done_at: dt.datetime | None, running: bool, failed: str | None
) -> str | None:
    """Why a period missed its deadline, or None when it did not (yet)."""
    if now < deadline or (done_at is not None and done_at <= deadline):
        return None
    if done_at is not None:
        return f"finished late, at {done_at:%Y-%m-%d %H:%M} UTC"
    if running:
        return "still running"
    if failed:
        return f"failed: {failed}"
    return "not done, nothing running"


def period_starts(service: Workflow, now: dt.datetime, lookback: dt.timedelta) -> list[dt.datetime]:
    """Starts of the periods whose deadline passed within `lookback` before `now`."""
    step = service.period()
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    first = now - lookback - service.deadline(epoch) + epoch - step
    start = epoch + ((first - epoch) // step) * step
    starts = []
    while start <= now:
        if now - lookback < service.deadline(start) <= now:
            starts.append(start)
        start += step
    return starts


def find_misses(now: dt.datetime, runs: pd.DataFrame) -> list[Miss]:
    """Every workflow's periods due within `[sla] lookback_hours` that missed their deadline."""
    lookback = dt.timedelta(hours=sla().lookback_hours)
    misses = []
    for name in comma_list(sla().workflows):
        service = workflow(name)
        param_name = service.period_parameter
        ours = runs[runs["workflow"] == service.name]
        period_of = pd.Series([json.loads(p).get(param_name) for p in ours["params"]], index=ours.index)
        for start in period_starts(service, now, lookback):
            task = service.summary_for(start)
            period = task.to_str_params()[param_name]
            mine = ours[period_of == period]
            reason = classify(
                service.deadline(start),
                now,
                _done_at(task, mine),
                bool((mine["effective_status"] == "RUNNING").any()),
                _last_failure(mine),
            )
            if reason:
                misses.append(Miss(service.name, period, service.deadline(start), reason))
    return misses


def _done_at(task: luigi.Task, mine: pd.DataFrame) -> dt.datetime | None:
    """When the period's summary was first done: the run history, else its manifest (a run from
    before the history existed)."""
    done = mine[(mine["task_id"] == task.task_id) & (mine["status"] == "DONE")]
    if len(done):
        return done["finished"].min().to_pydatetime()
    if not task.output().exists():
        return None
    return dt.datetime.fromisoformat(task.manifest()["finished_utc"])


def _last_failure(mine: pd.DataFrame) -> str | None:
    failed = mine[mine["status"] == "FAILED"]
    if not len(failed):
        return None
    last = failed.iloc[-1]
    return f"{last['family']}: {last['error']}"[:300]


def check(now: dt.datetime | None = None) -> list[Miss]:
    """Record and alert the misses not seen before; return them. Run by every scheduled run."""
    now = now or dt.datetime.now(dt.UTC)
    # runs of the periods looked at start after the period does (a day before its deadline at most)
    misses = find_misses(now, read_runs(since=now - dt.timedelta(hours=sla().lookback_hours + 48)))
    new = []
    with connect() as con:
        for miss in misses:
            inserted = con.execute(
                "INSERT OR IGNORE INTO sla_misses VALUES (?, ?, ?, ?, ?)",
                (miss.workflow, miss.period, miss.deadline.isoformat(), miss.reason, now.isoformat()),
            ).rowcount
            if inserted:
                new.append(miss)
    for miss in new:
        # One alert per miss; mail and webhook once per cooldown per workflow, so a day of missed
        # 15-minute windows is one mail that the alert log details.
        alert(
            miss.workflow,
            "sla",
            "error",
            f"SLA missed: {miss}",
            key=f"sla {miss.workflow}",
            period=miss.period,
            deadline=miss.deadline.isoformat(),
        )
    return new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.ops.sla", description="Find and alert SLA misses.")
    parser.add_argument("--now", type=dt.datetime.fromisoformat, help="check as of this UTC time (ISO)")
    args = parser.parse_args(argv)
    now = args.now.replace(tzinfo=args.now.tzinfo or dt.UTC) if args.now else None
    for miss in check(now):
        print(f"SLA missed: {miss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
