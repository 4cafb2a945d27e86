"""Service levels: when each workflow's run for a period must be done, and the check that alerts
once per miss.

A period is what the workflow's summary task is for: a day (WaferYieldDaily, run at 02:00 the
next morning, due by 06:00), an hour (FabMergeHourly, due 2 hours after the hour ends) or a
15-minute window (QualityMonitor, due 15 minutes after it ends). The check runs with every
scheduled run (`python -m jobs.schedule`), looks at the periods whose deadline passed within
`[sla] lookback_hours`, and records a miss when the summary was not done by its deadline:
still running, not done, or finished late. Each miss is recorded once in the run history's
`sla_misses` table and alerted once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import luigi


class sla(luigi.Config):  # noqa: N801 - the luigi.cfg section
    wafer_yield_start = luigi.Parameter(default="02:00", description="UTC time of the day's run, next day")
    wafer_yield_hours = luigi.FloatParameter(default=4.0, description="hours it may take")
    fab_merge_hours = luigi.FloatParameter(default=2.0, description="hours after the hour ends")
    quality_monitor_minutes = luigi.FloatParameter(default=15.0, description="minutes after the window ends")
    lookback_hours = luigi.FloatParameter(default=48.0, description="deadlines checked, back from now")


@dataclass(frozen=True)
class Service:
    """A workflow's summary task, its period parameter and how its deadline follows from it."""

    workflow: str
    family: str
    param: str
    period: dt.timedelta  # how long one period lasts

    def scheduled_start(self, start: dt.datetime) -> dt.datetime:
        """When the schedule starts the run for the period beginning at `start` (UTC)."""
        end = start + self.period
        if self.workflow == "wafer_yield":
            clock = dt.time.fromisoformat(sla().wafer_yield_start)
            return dt.datetime.combine(end.date(), clock, tzinfo=dt.UTC)
        return end

    def budget(self) -> dt.timedelta:
        """How long after its scheduled start the run may take."""
        settings = sla()
        return {
            "wafer_yield": dt.timedelta(hours=settings.wafer_yield_hours),
            "fab_merge": dt.timedelta(hours=settings.fab_merge_hours),
            "quality_monitor": dt.timedelta(minutes=settings.quality_monitor_minutes),
        }[self.workflow]

    def deadline(self, start: dt.datetime) -> dt.datetime:
        return self.scheduled_start(start) + self.budget()


def window() -> dt.timedelta:
    from .quality_monitor import quality_monitor

    return dt.timedelta(minutes=quality_monitor().window_minutes)


def services() -> dict[str, Service]:
    return {
        "wafer_yield": Service("wafer_yield", "WaferYieldDaily", "date", dt.timedelta(days=1)),
        "fab_merge": Service("fab_merge", "FabMergeHourly", "hour", dt.timedelta(hours=1)),
        "quality_monitor": Service("quality_monitor", "QualityMonitor", "window", window()),
    }
