"""The workflows this suite has, in one registry that the SLA check, the schedules, the dashboard
and the demo read: one spelling of each name, its module and summary task, its period, how far
back each scheduled run looks and how long a period's run may take."""

from __future__ import annotations

import datetime as dt
import importlib
import sys
from dataclasses import dataclass

import luigi

from jobs.pipeline.settings import quality_monitor, schedule, sla

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
RANGE_FORMATS = {"RangeDaily": "%Y-%m-%d", "RangeHourly": "%Y-%m-%dT%H", "RangeByMinutes": "%Y-%m-%dT%H%M"}
# Wait for fabs that have not delivered yet, re-checking every 5 minutes, until their deadline
# ([wafer_yield] landing_deadline_hours, [merge] deadline_hours) lets the period go on without them.
WAIT_FOR_LATE_FABS = (
    "--worker-keep-alive", "--worker-retry-external-tasks", "--scheduler-retry-delay", "300",
)  # fmt: skip


@dataclass(frozen=True)
class Workflow:
    name: str  # as in the run history, [sla] workflows and `scripts/schedule run NAME`
    module: str  # luigi --module ...
    summary_task: str  # the task a period's run ends with (what Range tools run)
    period_parameter: str  # its period parameter: date, hour or window
    range_tool: str  # RangeDaily, RangeHourly or RangeByMinutes
    waits_for_late_fabs: bool
    look_back_setting: tuple[str, str]  # ([schedule] key, its unit): how far back each run looks
    budget_setting: tuple[str, str]  # ([sla] key, its unit): how long a period's run may take

    def period(self) -> dt.timedelta:
        """How long one period lasts."""
        if self.name == "quality_monitor":
            return dt.timedelta(minutes=quality_monitor().window_minutes)
        return {"RangeDaily": dt.timedelta(days=1), "RangeHourly": dt.timedelta(hours=1)}[self.range_tool]

    def look_back(self) -> dt.timedelta:
        """How far back each scheduled run looks ([schedule])."""
        key, unit = self.look_back_setting
        return dt.timedelta(**{unit: getattr(schedule(), key)})

    def budget(self) -> dt.timedelta:
        """How long after its scheduled start a period's run may take ([sla])."""
        key, unit = self.budget_setting
        return dt.timedelta(**{unit: getattr(sla(), key)})

    def scheduled_start(self, start: dt.datetime) -> dt.datetime:
        """When the schedule starts the run for the period beginning at `start` (UTC): the
        nightly run at [sla] wafer_yield_start of the next day, the others when the period ends."""
        end = start + self.period()
        if self.name == "wafer_yield":
            clock = dt.time.fromisoformat(sla().wafer_yield_start)
            return dt.datetime.combine(end.date(), clock, tzinfo=dt.UTC)
        return end

    def deadline(self, start: dt.datetime) -> dt.datetime:
        return self.scheduled_start(start) + self.budget()

    def summary_class(self) -> type[luigi.Task]:
        """The summary task class (importing its workflow module registers its tasks)."""
        return getattr(importlib.import_module(self.module), self.summary_task)

    def range_args(self) -> list[str]:
        """The Range tool and its options for this workflow's periods."""
        extra = (
            ["--minutes-interval", str(quality_monitor().window_minutes)]
            if self.name == "quality_monitor"
            else []
        )
        return [self.range_tool, "--of", self.summary_task, *extra]

    def scheduled_window(self, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """[start, stop) of the periods a scheduled run at `now` covers: up to the last one that ended."""
        step = self.period()
        stop = EPOCH + ((now - EPOCH) // step) * step
        return stop - self.look_back(), stop

    def scheduled_command(self, now: dt.datetime, workers: int) -> list[str]:
        """The luigi command line of a scheduled run at `now` (UTC)."""
        start, stop = self.scheduled_window(now)
        form = RANGE_FORMATS[self.range_tool]
        return [
            sys.executable, "-m", "luigi", "--module", self.module, *self.range_args(),
            "--start", f"{start:{form}}", "--stop", f"{stop:{form}}", "--now", str(int(now.timestamp())),
            "--workers", str(workers), *(WAIT_FOR_LATE_FABS if self.waits_for_late_fabs else ()),
        ]  # fmt: skip


WORKFLOWS: dict[str, Workflow] = {
    w.name: w
    for w in (
        Workflow(
            "wafer_yield", "jobs.wafer_yield", "WaferYieldDaily", "date", "RangeDaily", True,
            look_back_setting=("wafer_yield_days", "days"), budget_setting=("wafer_yield_hours", "hours"),
        ),
        Workflow(
            "fab_merge", "jobs.fab_merge", "FabMergeHourly", "hour", "RangeHourly", True,
            look_back_setting=("fab_merge_hours", "hours"), budget_setting=("fab_merge_hours", "hours"),
        ),
        Workflow(
            "quality_monitor", "jobs.quality_monitor", "QualityMonitor", "window", "RangeByMinutes", False,
            look_back_setting=("quality_monitor_hours", "hours"),
            budget_setting=("quality_monitor_minutes", "minutes"),
        ),
    )
}  # fmt: skip


def workflow(name: str) -> Workflow:
    """A workflow by name; `wafer-yield` (the command-line spelling of old) means `wafer_yield`."""
    return WORKFLOWS[name.replace("-", "_")]
