"""The model decisions of the nightly run as pure functions: whether a day can train (and on
which days), and whether a validated candidate replaces the champion. Each returns a plain dict
that the workflow records as its output, so the reason for every decision is kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class TrainingRules:
    min_devices: int  # fewer new devices, or labelled training rows, skip training
    train_window_days: int  # labelled days learned from; the newest labelled day is the holdout


@dataclass(frozen=True)
class DeployRules:
    auc_margin: float  # a candidate must beat the champion's holdout AUC by this
    min_accuracy: float


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


def deploy_decision(
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    candidate_model: dict[str, Any],
    champion_model: dict[str, Any] | None,
    requests: list[dict[str, Any]],
    rules: DeployRules,
) -> dict[str, Any]:
    """Deploy a candidate that beats the champion by the margin with enough accuracy.

    `candidate`/`champion`: their holdout metrics (auc, accuracy); `candidate_model`: the record
    production would point at; `champion_model`: the current one. A retrain request (drift found
    by the quality monitor) waives the margin: the champion learned from data from before the
    drift, so a candidate as good on the new data replaces it. The result's `alert` is set when
    the decision should alert."""
    margin = 0.0 if requests else rules.auc_margin
    numbers = {
        "candidate": candidate,
        "champion": champion,
        "auc_margin": margin,
        "retrain_requests": requests,
    }
    kept = {
        "decision": "kept champion" if champion_model else "not deployed",
        "production_after": champion_model,
    }
    if candidate["accuracy"] < rules.min_accuracy:
        why = f"accuracy {candidate['accuracy']:.4f} < {rules.min_accuracy}"
        return {**kept, "why": why, **numbers, "alert": f"candidate not deployed: {why}"}
    drift = "; ".join(
        f"retrain requested: drift of {r['test']} on {r['fab']} (PSI {r['psi']:.2f})" for r in requests
    )
    if champion and candidate["auc"] < champion["auc"] + margin:
        why = f"AUC {candidate['auc']:.4f} does not beat the champion's {champion['auc']:.4f} by {margin}"
        return {**kept, "why": "; ".join(filter(None, [why, drift])), **numbers}
    against = f"AUC {candidate['auc']:.4f} vs champion {champion['auc']:.4f}" if champion else "first model"
    why = "; ".join(filter(None, [f"{against}, accuracy {candidate['accuracy']:.4f}", drift]))
    return {"decision": "deployed", "why": why, "production_after": candidate_model, **numbers}
