"""The nightly run's training plan as a pure function, on a few rows (validation, rollout and
rollback: tests/test_lifecycle.py)."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from jobs.domain.decisions import TrainingRules, training_plan

RULES = TrainingRules(min_devices=3, train_window_days=2)
DAYS = [dt.date(2026, 11, 1) + dt.timedelta(days=n) for n in range(4)]


def labelled(rows_per_day: dict[dt.date, int]) -> pd.DataFrame:
    return pd.DataFrame({"date": [d for d, n in rows_per_day.items() for _ in range(n)]})


def test_training_plan_holds_out_the_newest_day_and_keeps_the_window() -> None:
    plan = training_plan(True, [], 10, labelled({d: 2 for d in DAYS}), RULES)
    assert plan["status"] == "train"
    assert plan["holdout"] == DAYS[-1] and plan["train_days"] == DAYS[1:3]
    assert len(plan["train"]) == 4


def test_training_plan_says_why_it_skips() -> None:
    assert training_plan(False, ["fab1: schema"], 10, labelled({}), RULES) == {
        "status": "skipped",
        "decision": "skipped: quality gate",
        "failed_checks": ["fab1: schema"],
    }
    few_new = training_plan(True, [], 2, labelled({d: 2 for d in DAYS}), RULES)
    assert few_new["decision"] == "skipped: insufficient data (2 < 3 devices)"
    one_day = training_plan(True, [], 10, labelled({DAYS[0]: 5}), RULES)
    assert one_day["decision"] == "skipped: insufficient data (1 labelled days < 2)"
    few_rows = training_plan(True, [], 10, labelled({DAYS[0]: 1, DAYS[1]: 1, DAYS[2]: 9}), RULES)
    assert few_rows["decision"] == "skipped: insufficient data (2 < 3 labelled devices)"
