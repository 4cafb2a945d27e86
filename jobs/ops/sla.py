"""Service levels: when each workflow's run for a period must be done, and the check that alerts
once per miss.

A period is what the workflow's summary task is for: a day (WaferYieldDaily, run at 02:00 the
next morning, due by 06:00), an hour (FabMergeHourly, due 2 hours after the hour ends) or a
15-minute window (QualityMonitor, due 15 minutes after it ends). The check runs with every
scheduled run (`python -m jobs.ops.schedules`), looks at the periods whose deadline passed within
`[sla] lookback_hours`, and records a miss when the summary was not done by its deadline:
still running, not done, or finished late. Each miss is recorded once in the run history's
`sla_misses` table and alerted once.

The baseline: periods whose run was scheduled before the schedules existed (installed, or the
first scheduled run, `{root}/history/sla_baseline.json`), or before `--since`, are no misses, so
a demo, a backfill or a first deployment does not flood on-call. A replay (`--now`) reports what
it finds but records and alerts nothing unless asked (`--alert`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import luigi
import pandas as pd

from jobs.files import read_json, write_json
from jobs.ops.alerts import alert
from jobs.ops.history import connect, history_file, read_runs
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


def baseline_file() -> Path:
    return history_file().parent / "sla_baseline.json"


def baseline() -> dt.datetime | None:
    """Since when the schedules run here (None: never installed nor run: no SLA yet)."""
    path = baseline_file()
    return dt.datetime.fromisoformat(read_json(path)["since"]) if path.exists() else None


def set_baseline(since: dt.datetime, why: str) -> None:
    """Record when the schedules started, once (a reinstall keeps the first baseline)."""
    if not baseline_file().exists():
        write_json(baseline_file(), {"since": since.isoformat(timespec="seconds"), "why": why})


def find_misses(now: dt.datetime, runs: pd.DataFrame, since: dt.datetime | None = None) -> list[Miss]:
    """Every workflow's periods due within `[sla] lookback_hours` that missed their deadline,
    leaving out periods whose run was scheduled before `since`."""
    lookback = dt.timedelta(hours=sla().lookback_hours)
    misses = []
    for name in comma_list(sla().workflows):
        service = workflow(name)
        param_name = service.period_parameter
        ours = runs[runs["workflow"] == service.name]
        period_of = pd.Series([json.loads(p).get(param_name) for p in ours["params"]], index=ours.index)
        for start in period_starts(service, now, lookback):
            if since is not None and service.scheduled_start(start) < since:
                continue
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


def check(
    now: dt.datetime | None = None, since: dt.datetime | None = None, record: bool = True
) -> list[Miss]:
    """Record and alert the misses not seen before; return them. Run by every scheduled run.
    `since` defaults to the baseline; without one there is no SLA yet. With `record` False (a
    replay) the misses found are returned, neither recorded nor alerted."""
    now = now or dt.datetime.now(dt.UTC)
    since = since or baseline()
    if since is None:
        return []
    # runs of the periods looked at start after the period does (a day before its deadline at most)
    runs = read_runs(since=now - dt.timedelta(hours=sla().lookback_hours + 48))
    misses = find_misses(now, runs, since)
    if not record:
        return misses
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


def utc_time(text: str) -> dt.datetime:
    """An ISO time from the command line; without a zone it is UTC."""
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


_said_no_baseline: list[bool] = []


def report(now: dt.datetime | None, since: dt.datetime | None, record: bool) -> None:
    """Check and print each miss once on stdout (the alert's own log line is not echoed too)."""
    logging.getLogger("luigi-interface").addHandler(logging.NullHandler())
    if since is None and baseline() is None:
        if not _said_no_baseline:  # a scheduled run checks twice: say it once
            print("SLA: no baseline yet (schedules neither installed nor run here; --since ISO sets one)")
            _said_no_baseline.append(True)
        return
    for miss in check(now, since, record):
        print(f"SLA missed: {miss}" + ("" if record else " (replay: not recorded or alerted; --alert to)"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.ops.sla", description="Find and alert SLA misses.")
    parser.add_argument("--now", type=utc_time, help="check as of this UTC time (ISO): a replay")
    parser.add_argument("--since", type=utc_time, help="periods scheduled before this are no misses")
    parser.add_argument("--alert", action="store_true", help="a replay records and alerts its misses too")
    args = parser.parse_args(argv)
    report(args.now, args.since, record=args.now is None or args.alert)
    return 0


if __name__ == "__main__":
    sys.exit(main())
