"""Whether a day can train, and on which days, as a pure function: it returns a plain dict that
the workflow records as its output, so the reason for every decision is kept. What a trained
candidate becomes is jobs/domain/lifecycle.py's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class TrainingRules:
    min_devices: int  # fewer new devices, or labelled training rows, skip training
    train_window_days: int  # labelled days learned from; the newest labelled day is the holdout


def training_plan(
    gate_passed: bool,
    failed_checks: list[str],
    new_devices: int,
    labelled: pd.DataFrame,
    rules: TrainingRules,
) -> dict[str, Any]:
    """`{"status": "train", "holdout": day, "train_days": [...], "train": rows}` or
    `{"status": "skipped", "decision": why, ...numbers}`. `labelled`: the window's wafer-sort
    passing dies whose final-test label is known, with a `date` column."""
    if not gate_passed:
        return {"status": "skipped", "decision": "skipped: quality gate", "failed_checks": failed_checks}
    numbers = {"new_devices": new_devices}
    if new_devices < rules.min_devices:
        why = f"skipped: insufficient data ({new_devices} < {rules.min_devices} devices)"
        return {"status": "skipped", "decision": why, **numbers}
    days = sorted(labelled["date"].unique()) if len(labelled) else []
    if len(days) < 2:
        return {
            "status": "skipped",
            "decision": f"skipped: insufficient data ({len(days)} labelled days < 2)",
            **numbers,
        }
    holdout, train_days = days[-1], days[:-1][-rules.train_window_days :]
    train = labelled[labelled["date"].isin(train_days)]
    if len(train) < rules.min_devices:
        why = f"skipped: insufficient data ({len(train)} < {rules.min_devices} labelled devices)"
        return {"status": "skipped", "decision": why, **numbers}
    return {"status": "train", "holdout": holdout, "train_days": train_days, "train": train}
