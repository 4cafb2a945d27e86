"""SLAs: deadlines per workflow, and the check that finds misses and alerts once per miss."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import luigi
import pytest

from jobs.ops import history
from jobs.ops.alerts import read_alerts
from jobs.ops.history import read_sla_misses
from jobs.ops.sla import check, classify, main, period_starts
from jobs.ops.workflows import WORKFLOWS
from jobs.simulation.simulate import main as simulate
from jobs.wafer_yield import Score, WaferYieldDaily
from tests.helpers import luigi_settings

UTC = dt.UTC
D1, D2, D3 = (dt.date(2026, 11, 10) + dt.timedelta(days=n) for n in range(3))
SINCE = dt.datetime.combine(D1, dt.time(), tzinfo=dt.UTC)  # the SLA baseline: the schedules start


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=UTC)


def test_deadlines_follow_luigi_cfg() -> None:
    wafer, merge, monitor = (WORKFLOWS[w] for w in ("wafer_yield", "fab_merge", "quality_monitor"))
    assert wafer.deadline(at(D1, 0)) == at(D2, 6)  # the 02:00 run the next morning, 4 hours
    assert merge.deadline(at(D1, 13)) == at(D1, 16)  # 2 hours after the hour ends
    assert monitor.deadline(at(D1, 13, 15)) == at(D1, 13, 45)  # 15 minutes after the window ends
    with luigi_settings(sla={"wafer_yield_start": "01:00", "wafer_yield_hours": 3}):
        assert wafer.deadline(at(D1, 0)) == at(D2, 4)


def test_periods_due_are_those_whose_deadline_passed_within_the_lookback() -> None:
    merge = WORKFLOWS["fab_merge"]
    starts = period_starts(merge, now=at(D2, 5, 30), lookback=dt.timedelta(hours=3))
    # deadlines 03:00, 04:00, 05:00 fall in (02:30, 05:30]: hours 00, 01, 02
    assert starts == [at(D2, 0), at(D2, 1), at(D2, 2)]
    wafer = WORKFLOWS["wafer_yield"]
    day_before = D1 - dt.timedelta(days=1)
    assert period_starts(wafer, now=at(D2, 5, 59), lookback=dt.timedelta(hours=24)) == [at(day_before, 0)]
    assert period_starts(wafer, now=at(D2, 6), lookback=dt.timedelta(hours=1)) == [at(D1, 0)]


def test_classify() -> None:
    deadline = at(D2, 6)
    assert classify(deadline, at(D2, 5), None, False, None) is None  # not due yet
    assert classify(deadline, at(D2, 7), at(D2, 5), False, None) is None  # on time
    late = classify(deadline, at(D2, 7), at(D2, 6, 30), False, None)
    assert late == "finished late, at 2026-11-11 06:30 UTC"
    assert classify(deadline, at(D2, 7), None, True, "x") == "still running"
    assert classify(deadline, at(D2, 7), None, False, "Train: boom") == "failed: Train: boom"
    assert classify(deadline, at(D2, 7), None, False, None) == "not done, nothing running"


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Three days of one fab; day 1 is run (after its deadline: the test runs in 2026-11 or later)."""
    root = tmp_path_factory.mktemp("sla")
    args = ["--root", str(root), "--start", str(D1), "--days", "3", "--fabs", "fab1", "--lots", "1"]
    assert simulate([*args, "--wafers", "2", "--quiet"]) == 0
    settings = {
        "paths": {"root": root},
        "wafer_yield": {"fabs": "fab1", "min_devices": 1000},
        "sla": {"workflows": "wafer_yield", "lookback_hours": 48},
        "email": {"receiver": ""},
    }
    with luigi_settings(**settings):
        assert luigi.build([WaferYieldDaily(date=D1)], local_scheduler=True, workers=1, log_level="WARNING")
        yield root


def test_an_sla_miss_alerts_exactly_once(floor: Path) -> None:
    first = check(now=at(D3, 7), since=SINCE)  # day 1 was due on day 2 at 06:00, day 2 on day 3
    assert [(m.period, m.reason.split(",")[0]) for m in first] == [
        (str(D1), "finished late"),
        (str(D2), "not done"),
    ]
    sla_alerts = [a for a in read_alerts() if a["task"] == "sla"]
    assert len(sla_alerts) == 2
    assert all(a["message"].startswith("SLA missed: wafer_yield") for a in sla_alerts)
    assert sla_alerts[0]["numbers"]["period"] == str(D1)
    assert [a["sent"] for a in sla_alerts] == [True, False]  # one mail/webhook per cooldown per workflow

    # every later check (the schedule runs it every 15 minutes) finds the same misses: no new alert
    assert check(now=at(D3, 7, 15), since=SINCE) == [] and check(now=at(D3, 9), since=SINCE) == []
    assert len([a for a in read_alerts() if a["task"] == "sla"]) == 2
    misses = read_sla_misses()
    assert list(misses["period"]) == [str(D1), str(D2)]
    assert misses["reason"].str.startswith("finished late").tolist() == [True, False]


def test_a_run_still_going_past_its_deadline_is_reported_as_such(floor: Path) -> None:
    score = Score(date=D3)
    history.record_start(score)  # the real handler: a RUNNING row for this process
    try:
        (miss,) = check(now=at(D3 + dt.timedelta(days=1), 6, 1), since=SINCE)
        assert (miss.period, miss.reason) == (str(D3), "still running")
    finally:
        history.record_failure(score, RuntimeError("stopped by the test"))
    runs = history.read_runs()
    assert runs[runs["task_id"] == score.task_id]["status"].tolist() == ["FAILED"]
    assert runs[runs["pid"] == os.getpid()]["effective_status"].tolist().count("RUNNING") == 0


def test_the_command_line_prints_new_misses(floor: Path, capsys) -> None:
    replay = ["--now", f"{D3 + dt.timedelta(days=3)}T07:00", "--since", f"{D1}"]
    assert main(replay) == 0  # a replay reports, but records and alerts nothing
    out = capsys.readouterr().out
    assert out.startswith("SLA missed: wafer_yield") and "replay: not recorded" in out
    alerted = len(read_alerts())
    assert main([*replay, "--alert"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("SLA missed: wafer_yield") and "not done" in out and "replay" not in out
    assert out.count("\n") == len(read_alerts()) - alerted  # each miss one line, alerted once


def test_no_misses_before_the_schedules_exist(floor: Path, capsys) -> None:
    """A root where schedules were never installed or run (a demo, a backfill) has no SLA yet."""
    assert check(now=at(D3 + dt.timedelta(days=2), 7)) == []
    assert main([]) == 0 and capsys.readouterr().out.startswith("SLA: no baseline yet")
    # periods scheduled before the baseline are no misses either
    assert check(now=at(D3, 7), since=at(D3, 3), record=False) == []  # day 2 was started at 02:00
