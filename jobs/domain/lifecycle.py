"""The model lifecycle as pure functions: a candidate's validation decision, which wafers a
challenger serves, and one day's step of the serving plan (manual actions, automatic rollback,
rollout). The workflow records each result as an output and mirrors it into the registry
(jobs/domain/registry.py); the plan of a day depends only on the day before's plan, the day's
validation, the actions that took effect that day and the labels that landed, so a backfill
decides what the nightly run decided.

A plan: {"champion": {"version", "validation", "previous": [older champions]} | None,
         "challenger": {"version", "state", "share", "validation"} | None}.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from jobs.domain.features import DIE_COLUMNS
from jobs.domain.model import evaluate_scores
from jobs.domain.registry import CHALLENGER, CHAMPION, Change

ROLLOUT_STEPS = (0.1, 0.5, 1.0)
Plan = dict[str, Any]
# What Score adds to each prediction row beside p_fail (jobs/domain/model.py score_day keeps them).
SERVING_COLUMNS = (
    "model_version",
    "champion_version",
    "p_fail_champion",
    "challenger_version",
    "p_fail_challenger",
)


@dataclass(frozen=True)
class LifecycleRules:
    auc_margin: float  # a candidate's holdout AUC must beat the champion's by this...
    min_accuracy: float  # ...with at least this holdout accuracy
    replay_auc_tolerance: float  # and its replay AUC may trail the champion's by at most this
    live_auc_tolerance: float  # a rollout step holds while the challenger's live AUC trails by less
    min_live_dies: int  # fewer newly labelled dies: no step, no rollback check that day
    rollback_accuracy_drop: float  # champion's live accuracy below validation x (1 - this): rollback
    rollback_auc_drop: float  # or its live AUC below validation AUC - this


# --- validation ----------------------------------------------------------------------------------


def validation_decision(
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    requests: list[dict[str, Any]],
    rules: LifecycleRules,
) -> dict[str, Any]:
    """ "won" or "lost" with the reason. `candidate`/`champion`: {"holdout": metrics, "replay":
    {"auc": mean AUC, ...}}. A retrain request (drift found by the quality monitor) waives the
    margin: the champion learned from data from before the drift."""
    margin = 0.0 if requests else rules.auc_margin
    mine = candidate["holdout"]
    drift = "; ".join(
        f"retrain requested: drift of {r['test']} on {r['fab']} (PSI {r['psi']:.2f})" for r in requests
    )
    if mine.get("auc") is None or mine.get("accuracy") is None:
        return {"decision": "lost", "why": "no holdout metrics (no labelled dies)", "auc_margin": margin}
    if mine["accuracy"] < rules.min_accuracy:
        why = f"holdout accuracy {mine['accuracy']:.4f} < {rules.min_accuracy}"
        return {"decision": "lost", "why": why, "auc_margin": margin}
    if champion is None:
        return {"decision": "won", "why": f"first model, holdout AUC {mine['auc']:.4f}", "auc_margin": margin}
    theirs = champion["holdout"]
    if theirs.get("auc") is not None and mine["auc"] < theirs["auc"] + margin:
        why = f"holdout AUC {mine['auc']:.4f} does not beat the champion's {theirs['auc']:.4f} by {margin}"
        return {"decision": "lost", "why": "; ".join(filter(None, [why, drift])), "auc_margin": margin}
    replay, replay_champion = candidate["replay"].get("auc"), champion["replay"].get("auc")
    if (
        replay is not None
        and replay_champion is not None
        and replay < replay_champion - rules.replay_auc_tolerance
    ):
        why = (
            f"replay AUC {replay:.4f} trails the champion's {replay_champion:.4f}"
            f" by more than {rules.replay_auc_tolerance}"
        )
        return {"decision": "lost", "why": why, "auc_margin": margin}
    against = (
        f"holdout AUC {mine['auc']:.4f} vs champion {theirs['auc']:.4f}"
        if theirs.get("auc")
        else "champion unmeasured"
    )
    return {"decision": "won", "why": "; ".join(filter(None, [against, drift])), "auc_margin": margin}


# --- serving -------------------------------------------------------------------------------------


def wafer_slot(lot_id: pd.Series, wafer_id: pd.Series) -> np.ndarray:
    """A wafer's fixed place in [0, 1), from a hash of its lot and wafer: a challenger at share s
    serves the wafers below s, so a wafer it serves at 10% it still serves at 50%."""
    keys = (lot_id.astype(str) + "/" + wafer_id.astype(str)).to_numpy()
    unique, inverse = np.unique(keys, return_inverse=True)
    slots = np.array([int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "big") / 2**64 for k in unique])
    return slots[inverse] if len(keys) else np.zeros(0)


def serving_share(plan: Plan) -> float:
    challenger = plan.get("challenger")
    return challenger["share"] if challenger and challenger["state"] == "rolling_out" else 0.0


def empty_plan() -> Plan:
    return {"champion": None, "challenger": None}


def plan_with_champion(number: int, validation: dict[str, Any]) -> Plan:
    return {"champion": {"version": number, "validation": validation, "previous": []}, "challenger": None}


def versions_of(plan: Plan) -> list[int]:
    return [plan[role]["version"] for role in ("champion", "challenger") if plan.get(role)]


def summary(plan: Plan) -> dict[str, Any]:
    """The plan in a manifest's few facts."""
    challenger = plan.get("challenger") or {}
    return {
        "champion": (plan.get("champion") or {}).get("version"),
        "challenger": challenger.get("version"),
        "challenger_state": challenger.get("state"),
        "rollout_share": serving_share(plan),
    }


def describe(plan: Plan) -> str:
    champion, challenger = plan.get("champion"), plan.get("challenger")
    text = f"champion v{champion['version']}" if champion else "no champion"
    if challenger:
        share = serving_share(plan)
        text += f", challenger v{challenger['version']} " + (
            f"on {share:.0%} of the wafers" if share else "in shadow"
        )
    return text


def serve(dies: pd.DataFrame, plan: Plan, models: dict[int, Any]) -> pd.DataFrame:
    """`dies` with p_fail as the plan serves it (the challenger on its share of the wafers, the
    champion on the rest), the version that served each row, and both models' own scores."""
    champion, challenger = plan["champion"]["version"], (plan.get("challenger") or {}).get("version")
    own = models[champion].predict_proba(dies)
    other = models[challenger].predict_proba(dies) if challenger else np.full(len(dies), np.nan)
    by_challenger = wafer_slot(dies["lot_id"], dies["wafer_id"]) < serving_share(plan)
    return dies.assign(
        p_fail=np.where(by_challenger, other, own),
        model_version=np.where(by_challenger, challenger or 0, champion).astype("int64"),
        champion_version=np.int64(champion),
        p_fail_champion=own,
        challenger_version=pd.array([challenger] * len(dies), dtype="Int64"),
        p_fail_challenger=other,
    )


def columns_read(models: Iterable[Any]) -> list[str]:
    """The feature-table columns that serving (`serve`, model.score_day) and validating
    (`candidate_metrics`) a day with `models` read: the die's identity and wafer-sort outcome,
    and every model's features (a YieldModel's or a notebook's contract). Feature tables have
    ~22,000 columns at bench scale; a day needs a few dozen."""
    return list(dict.fromkeys([*DIE_COLUMNS, *(c for m in models for c in m.features)]))


def candidate_metrics(model: Any, labelled: pd.DataFrame, holdout: Any) -> dict[str, Any]:
    """A model on the holdout day and replayed on every labelled day of `labelled` (pooled and
    per fab): AUC, accuracy, Brier, wafer-yield MAE (jobs/domain/model.py evaluate_scores)."""
    p = model.predict_proba(labelled) if len(labelled) else np.zeros(0)
    y = labelled["ft_failed"].to_numpy(dtype=bool)
    wafers = labelled[["fab", "lot_id", "wafer_id"]]
    on_holdout = (labelled["date"] == holdout).to_numpy()
    replay = evaluate_scores(y, p, wafers)
    replay["per_fab"] = {
        fab: evaluate_scores(y[rows], p[rows], wafers[rows])
        for fab, rows in ((f, (labelled["fab"] == f).to_numpy()) for f in sorted(labelled["fab"].unique()))
    }
    return {"holdout": evaluate_scores(y[on_holdout], p[on_holdout], wafers[on_holdout]), "replay": replay}


# --- a day's step ----------------------------------------------------------------------------------


def live_metrics(live: pd.DataFrame, plan: Plan) -> dict[str, Any]:
    """Metrics of the champion and the challenger of `plan` on the newly labelled dies that each
    scored (`live`: predictions of earlier days joined with the labels that landed today)."""
    out: dict[str, Any] = {"dies": len(live)}
    for role in ("champion", "challenger"):
        entry = plan.get(role)
        if entry is None or not len(live):
            continue
        rows = live[live[f"{role}_version"] == entry["version"]]
        out[role] = {
            "version": entry["version"],
            **evaluate_scores(rows["ft_failed"], rows[f"p_fail_{role}"]),
        }
    return out


def day_step(
    plan: Plan, actions: list[dict[str, Any]], live: dict[str, Any], rules: LifecycleRules
) -> tuple[Plan, list[dict[str, Any]]]:
    """(the day's plan, what happened) from the day before's plan and the events that take
    effect today (jobs/domain/registry.py ACTIONS). In order: the actions of people (approve,
    reject, promote, rollback), the automatic rollback, the rollout step, the day's validated
    candidates (shadow-scored from today), and the approvals of those (auto-approval)."""
    plan, happened = copy.deepcopy(plan), []
    validated = [a for a in actions if a["action"] == "validated"]
    newcomers = {a["version"] for a in validated}
    for action in (a for a in actions if a["action"] != "validated" and a.get("version") not in newcomers):
        happened += _act(plan, action)
    happened += _rollback_check(plan, live, rules)
    happened += _rollout_step(plan, live, rules)
    for action in validated:
        happened += _take_candidate(plan, action)
    for action in (a for a in actions if a["action"] != "validated" and a.get("version") in newcomers):
        happened += _act(plan, action)
    return plan, happened


def awaiting_approval(happened: list[dict[str, Any]]) -> list[int]:
    """The versions that became the challenger (and wait for a person) in a day's events."""
    approved = {e["version"] for e in happened if e["action"] in ("approved", "champion")}
    return [e["version"] for e in happened if e["action"] == "challenger" and e["version"] not in approved]


STATE_OF_ACTION = {
    "approved": "approved",
    "rejected": "rejected",
    "rolled back": "rolled_back",
    "rollout stopped": "retired",
    "kept out": "retired",
    "superseded": "retired",
}


def registry_change(plan: Plan, happened: list[dict[str, Any]], day: str) -> Change:
    """The registry change that makes the registry show `plan`: aliases, each touched version's
    state (and why), the challenger's rollout share, and an event listing what happened."""
    tags: dict[int, dict[str, str]] = {}
    for event in happened:
        if event.get("action") in STATE_OF_ACTION:
            state = STATE_OF_ACTION[event["action"]]
            why = str(event.get("why", ""))[:4000]
            tags.setdefault(event["version"], {}).update(
                state=state, why=why, decided_on=day, rollout_share="0"
            )
        if event.get("action") == "champion" and event.get("replaced"):
            tags.setdefault(event["replaced"], {}).update(state="replaced", decided_on=day, rollout_share="0")
    champion, challenger = plan.get("champion"), plan.get("challenger")
    if champion:
        tags.setdefault(champion["version"], {}).update(state="champion", rollout_share="1.0")
    if challenger:
        state = {"state": challenger["state"], "rollout_share": f"{challenger['share']:g}"}
        tags.setdefault(challenger["version"], {}).update(state)
    aliases = {
        CHAMPION: champion["version"] if champion else None,
        CHALLENGER: challenger["version"] if challenger else None,
    }
    return Change(
        {"action": "day", "day": day, "by": "jobs.wafer_yield", "happened": happened}, aliases, tags
    )


def _act(plan: Plan, action: dict[str, Any]) -> list[dict[str, Any]]:
    kind, number, challenger = action["action"], action.get("version"), plan.get("challenger")
    if kind == "approve" and challenger and challenger["version"] == number:
        challenger["state"] = "approved"
        if plan.get("champion") is None:  # nothing to roll out against: the first model serves at once
            return _crown(plan, f"approved by {action['by']}: the first model")
        return [{"action": "approved", "version": number, "by": action["by"]}]
    if kind == "reject" and challenger and challenger["version"] == number:
        plan["challenger"] = None
        return [{"action": "rejected", "version": number, "by": action["by"], "why": action.get("note", "")}]
    if kind == "promote":
        if challenger and challenger["version"] == number:
            return _crown(plan, f"promoted by {action['by']}")
        return _replace_champion(
            plan,
            {"version": number, "validation": action.get("validation", {})},
            f"promoted by {action['by']}",
        )
    if kind == "rollback":
        return _roll_back(plan, f"rolled back by {action['by']}")
    return []


def _crown(plan: Plan, why: str) -> list[dict[str, Any]]:
    challenger = plan["challenger"]
    plan["challenger"] = None
    return _replace_champion(
        plan, {"version": challenger["version"], "validation": challenger["validation"]}, why
    )


def _replace_champion(plan: Plan, new: dict[str, Any], why: str) -> list[dict[str, Any]]:
    old = plan.get("champion")
    previous = (
        []
        if old is None
        else [{"version": old["version"], "validation": old["validation"]}, *old["previous"]]
    )
    plan["champion"] = {**new, "previous": previous[:10]}
    return [{"action": "champion", "version": new["version"], "replaced": old and old["version"], "why": why}]


def _roll_back(plan: Plan, why: str) -> list[dict[str, Any]]:
    champion = plan.get("champion")
    if champion is None or not champion["previous"]:
        number = champion and champion["version"]
        why = f"{why}: no earlier champion to go back to"
        return [{"action": "rollback refused", "version": number, "why": why}]
    back, *older = champion["previous"]
    plan["champion"] = {**back, "previous": older}
    return [{"action": "rolled back", "version": champion["version"], "to": back["version"], "why": why}]


def _rollback_check(plan: Plan, live: dict[str, Any], rules: LifecycleRules) -> list[dict[str, Any]]:
    champion, measured = plan.get("champion"), live.get("champion")
    if champion is None or measured is None or measured["rows"] < rules.min_live_dies:
        return []
    if measured.get("version") != champion["version"]:
        return []
    expected, reasons = champion["validation"], []
    floor = (expected.get("accuracy") or 0) * (1 - rules.rollback_accuracy_drop)
    if measured["accuracy"] is not None and measured["accuracy"] < floor:
        drop = f"{rules.rollback_accuracy_drop:.0%}"
        reasons.append(
            f"live accuracy {measured['accuracy']:.4f} fell more than {drop} below its validation"
            f" accuracy {expected['accuracy']:.4f}"
        )
    auc_floor = (expected.get("auc") or 0) - rules.rollback_auc_drop
    if measured["auc"] is not None and measured["auc"] < auc_floor:
        reasons.append(
            f"live AUC {measured['auc']:.4f} fell more than {rules.rollback_auc_drop} below its validation"
            f" AUC {expected['auc']:.4f}"
        )
    if not reasons:
        return []
    happened = _roll_back(
        plan, f"automatic: v{champion['version']} {'; '.join(reasons)} on {measured['rows']} dies"
    )
    for event in happened:
        event["live"] = measured
    return happened


def _rollout_step(plan: Plan, live: dict[str, Any], rules: LifecycleRules) -> list[dict[str, Any]]:
    challenger = plan.get("challenger")
    if challenger is None or challenger["state"] not in ("approved", "rolling_out"):
        return []
    if challenger["state"] == "approved":
        challenger.update(state="rolling_out", share=ROLLOUT_STEPS[0])
        return [{"action": "rollout", "version": challenger["version"], "share": ROLLOUT_STEPS[0]}]
    mine, theirs = live.get("challenger"), live.get("champion")
    if (
        mine is None
        or theirs is None
        or mine["rows"] < rules.min_live_dies
        or mine["auc"] is None
        or theirs["auc"] is None
    ):
        return [{"action": "rollout waits", "version": challenger["version"], "share": challenger["share"],
                 "why": f"fewer than {rules.min_live_dies} newly labelled dies scored by both"}]  # fmt: skip
    if mine["auc"] < theirs["auc"] - rules.live_auc_tolerance:
        plan["challenger"] = None
        why = (
            f"live AUC {mine['auc']:.4f} trails the champion's {theirs['auc']:.4f} on the same"
            f" {mine['rows']} dies"
            f" by more than {rules.live_auc_tolerance}"
        )
        return [
            {
                "action": "rollout stopped",
                "version": challenger["version"],
                "share": challenger["share"],
                "why": why,
            }
        ]
    share = next(s for s in ROLLOUT_STEPS if s > challenger["share"])
    if share >= 1.0:
        return _crown(plan, f"rollout complete: live AUC {mine['auc']:.4f} vs {theirs['auc']:.4f}")
    challenger["share"] = share
    return [{"action": "rollout", "version": challenger["version"], "share": share}]


def _take_candidate(plan: Plan, validated: dict[str, Any]) -> list[dict[str, Any]]:
    number = validated["version"]
    if validated["decision"] != "won":
        return [{"action": "kept out", "version": number, "why": validated["why"]}]
    current = plan.get("challenger")
    if current is not None and current["state"] == "rolling_out":
        why = f"v{current['version']} is rolling out; {validated['why']}"
        return [{"action": "kept out", "version": number, "why": why}]
    happened = []
    if current is not None:
        happened.append({"action": "superseded", "version": current["version"], "by_version": number})
    plan["challenger"] = {
        "version": number,
        "state": "awaiting_approval",
        "share": 0.0,
        "validation": validated["validation"],
    }
    return [*happened, {"action": "challenger", "version": number, "why": validated["why"]}]
