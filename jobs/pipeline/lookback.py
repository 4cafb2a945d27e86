"""Luigi's Range tools, made to say so when a range reaches past their look-back.

RangeDaily, RangeHourly and RangeByMinutes only consider the last `days_back` / `hours_back` /
`minutes_back` (luigi.cfg sets these to more than a year); an older `--start` was silently
clamped, so a backfill of an old range printed "Did not run any tasks". Once installed (see
jobs/ops/runtime.py), such a range also
requires a `RangeOutsideLookBack` task that is never complete: the run logs one line saying which
option to raise, luigi's summary lists the missing range, and the exit code is non-zero.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import luigi
from luigi.tools import range as luigi_range

logger = logging.getLogger("luigi-interface")


class RangeOutsideLookBack(luigi.ExternalTask):
    """The part of a Range before its look-back: never complete, so it cannot pass unnoticed."""

    range_task = luigi.Parameter()
    start = luigi.Parameter()
    look_back_starts = luigi.Parameter()
    option = luigi.Parameter()

    def complete(self) -> bool:
        return False


_LOOK_BACK_OPTIONS = {
    luigi_range.RangeDailyBase: "days-back",
    luigi_range.RangeHourlyBase: "hours-back",
    luigi_range.RangeByMinutesBase: "minutes-back",
}
_luigi_requires = luigi_range.RangeBase.requires
_reported: set[str] = set()


def _requires_with_look_back_check(self: luigi_range.RangeBase) -> list[luigi.Task]:
    tasks = list(_luigi_requires(self))
    option = next((o for cls, o in _LOOK_BACK_OPTIONS.items() if isinstance(self, cls)), None)
    if option is None or self.start is None:
        return tasks
    now = dt.datetime.fromtimestamp(time.time() if self.now is None else self.now, tz=dt.UTC).replace(
        tzinfo=None
    )
    look_back_starts = self.moving_start(now)
    start = self.parameter_to_datetime(self.start)
    if start >= look_back_starts:
        return tasks
    outside = RangeOutsideLookBack(
        range_task=self.task_family,
        start=str(self.start),
        look_back_starts=f"{look_back_starts:%Y-%m-%d %H:%M}",
        option=option,
    )
    if self.task_id in _reported:  # luigi calls requires() several times: say it once
        return [*tasks, outside]
    _reported.add(self.task_id)
    logger.error(
        "%s: --start %s is before the look-back, which starts at %s; raise --%s (or [%s] %s in "
        "luigi.cfg) to cover it",
        self.task_family, self.start, outside.look_back_starts, option,
        self.task_family, option.replace("-", "_"),
    )  # fmt: skip
    return [*tasks, outside]


def install() -> None:
    """Make luigi's Range tools report a range older than their look-back (idempotent)."""
    luigi_range.RangeBase.requires = _requires_with_look_back_check
