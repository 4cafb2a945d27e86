"""The lifecycle's pure decisions (jobs/domain/lifecycle.py): validation, which wafers a
challenger serves, and a day's step of the plan through approval, rollout, rejection, a stopped
rollout and the automatic rollback."""

from __future__ import annotations

import numpy as np
import pandas as pd

from jobs.domain import lifecycle as lc
from jobs.domain import registry

RULES = lc.LifecycleRules(
    auc_margin=0.002,
    min_accuracy=0.9,
    replay_auc_tolerance=0.01,
    live_auc_tolerance=0.01,
    min_live_dies=100,
    rollback_accuracy_drop=0.05,
    rollback_auc_drop=0.05,
)
GOOD = {"auc": 0.80, "accuracy": 0.93, "brier": 0.06}


def metrics(auc: float, accuracy: float = 0.93, replay: float | None = None) -> dict:
    return {
        "holdout": {"auc": auc, "accuracy": accuracy},
        "replay": {"auc": auc if replay is None else replay},
    }


def validated(version: int, decision: str = "won") -> dict:
    return {
        "action": "validated",
        "version": version,
        "decision": decision,
        "why": "test",
        "validation": GOOD,
    }


def live(
    champion: tuple[int, float] | None = None, challenger: tuple[int, float] | None = None, rows: int = 500
) -> dict:
    out: dict = {"dies": rows}
    for role, entry in (("champion", champion), ("challenger", challenger)):
        if entry:
            out[role] = {"version": entry[0], "rows": rows, "auc": entry[1], "accuracy": 0.93}
    return out


def actions(plan: lc.Plan, happened: list[dict]) -> list[tuple]:
    return [(e["action"], e.get("version")) for e in happened]


def test_validation_needs_the_margin_unless_a_retrain_was_requested() -> None:
    champion = metrics(0.80)
    assert lc.validation_decision(metrics(0.81), champion, [], RULES)["decision"] == "won"
    lost = lc.validation_decision(metrics(0.801), champion, [], RULES)
    assert lost["decision"] == "lost" and "does not beat the champion's 0.8000 by 0.002" in lost["why"]
    drift = [{"test": "VTH_N_PM1", "fab": "fab1", "psi": 0.4}]
    assert lc.validation_decision(metrics(0.801), champion, drift, RULES)["decision"] == "won"
    assert lc.validation_decision(metrics(0.9, accuracy=0.5), None, [], RULES)["decision"] == "lost"
    replayed_worse = lc.validation_decision(metrics(0.81, replay=0.7), metrics(0.80, replay=0.79), [], RULES)
    assert replayed_worse["decision"] == "lost" and "replay AUC" in replayed_worse["why"]
    assert lc.validation_decision(metrics(0.7), None, [], RULES)["why"].startswith("first model")


def test_a_wafer_keeps_its_challenger_as_the_share_grows() -> None:
    lots = pd.Series([f"L{i // 25}" for i in range(2500)])
    wafers = pd.Series([f"{i % 25:02d}" for i in range(2500)])
    slot = lc.wafer_slot(lots, wafers)
    assert (slot == lc.wafer_slot(lots, wafers)).all() and ((slot >= 0) & (slot < 1)).all()
    at_10, at_50 = slot < 0.1, slot < 0.5
    assert (at_50[at_10]).all() and 0.05 < at_10.mean() < 0.15 and 0.4 < at_50.mean() < 0.6
    same_wafer = lc.wafer_slot(pd.Series(["L1", "L1"]), pd.Series(["03", "03"]))
    assert same_wafer[0] == same_wafer[1]  # every die of a wafer goes to one model


def test_a_winner_waits_for_approval_then_rolls_out_10_50_100() -> None:
    plan = lc.plan_with_champion(1, GOOD)
    plan, happened = lc.day_step(plan, [validated(2)], live(), RULES)
    assert plan["challenger"]["state"] == "awaiting_approval" and lc.awaiting_approval(happened) == [2]
    plan, happened = lc.day_step(plan, [], live((1, 0.8), (2, 0.82)), RULES)  # nobody approved yet
    assert plan["challenger"]["state"] == "awaiting_approval" and lc.serving_share(plan) == 0
    plan, happened = lc.day_step(plan, [{"action": "approve", "version": 2, "by": "ana"}], live(), RULES)
    assert actions(plan, happened) == [("approved", 2), ("rollout", 2)] and lc.serving_share(plan) == 0.1
    plan, happened = lc.day_step(plan, [], live((1, 0.8), (2, 0.805)), RULES)
    assert lc.serving_share(plan) == 0.5
    plan, happened = lc.day_step(plan, [], live((1, 0.8), (2, 0.80)), RULES)
    assert plan["champion"]["version"] == 2 and plan["challenger"] is None
    assert plan["champion"]["previous"][0]["version"] == 1 and happened[0]["replaced"] == 1


def test_the_rollout_waits_for_enough_labels_and_stops_on_worse_live_metrics() -> None:
    plan = lc.plan_with_champion(1, GOOD)
    plan["challenger"] = {"version": 2, "state": "rolling_out", "share": 0.1, "validation": GOOD}
    waiting, happened = lc.day_step(plan, [], live((1, 0.8), (2, 0.7), rows=50), RULES)
    assert waiting["challenger"]["share"] == 0.1 and happened[0]["action"] == "rollout waits"
    stopped, happened = lc.day_step(plan, [], live((1, 0.8), (2, 0.78)), RULES)
    assert stopped["challenger"] is None and stopped["champion"]["version"] == 1
    assert happened[0]["action"] == "rollout stopped" and "trails the champion's 0.8000" in happened[0]["why"]
    change = lc.registry_change(stopped, happened, "2026-11-20")
    assert change.tags[2]["state"] == "retired" and change.aliases == {"champion": 1, "challenger": None}
    assert set(lc.STATE_OF_ACTION.values()) <= set(registry.STATES)  # the states the registry documents


def test_a_loser_is_kept_out_and_a_rejection_ends_a_challenger() -> None:
    plan = lc.plan_with_champion(1, GOOD)
    kept, happened = lc.day_step(plan, [validated(2, "lost")], live(), RULES)
    assert kept["challenger"] is None and actions(kept, happened) == [("kept out", 2)]
    waiting, _ = lc.day_step(plan, [validated(3)], live(), RULES)
    rejected, happened = lc.day_step(waiting, [{"action": "reject", "version": 3, "by": "bo"}], live(), RULES)
    assert rejected["challenger"] is None and actions(rejected, happened) == [("rejected", 3)]
    assert lc.registry_change(rejected, happened, "d").tags[3]["state"] == "rejected"


def test_the_champion_is_rolled_back_when_its_live_auc_falls() -> None:
    plan = lc.plan_with_champion(1, GOOD)
    plan, _ = lc.day_step(plan, [validated(2), {"action": "promote", "version": 2, "by": "x"}], live(), RULES)
    assert plan["champion"]["version"] == 2
    held, happened = lc.day_step(plan, [], live((2, 0.78)), RULES)  # within the 0.05 drop
    assert held["champion"]["version"] == 2 and happened == []
    back, happened = lc.day_step(plan, [], live((2, 0.70)), RULES)
    assert back["champion"]["version"] == 1 and happened[0]["action"] == "rolled back"
    assert "live AUC 0.7000 fell more than 0.05 below its validation AUC 0.8000" in happened[0]["why"]
    nothing_left, happened = lc.day_step(back, [], live((1, 0.5)), RULES)
    assert nothing_left["champion"]["version"] == 1 and happened[0]["action"] == "rollback refused"


def test_serving_says_which_version_scored_each_die() -> None:
    dies = pd.DataFrame(
        {"lot_id": [f"L{i // 25}" for i in range(1000)], "wafer_id": [f"{i % 25}" for i in range(1000)]}
    )

    class Constant:
        def __init__(self, p: float) -> None:
            self.p = p

        def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
            return np.full(len(df), self.p)

    plan = lc.plan_with_champion(1, GOOD)
    plan["challenger"] = {"version": 2, "state": "rolling_out", "share": 0.5, "validation": GOOD}
    served = lc.serve(dies, plan, {1: Constant(0.1), 2: Constant(0.2)})
    by_two = served["model_version"] == 2
    assert 0.3 < by_two.mean() < 0.7 and (served.loc[by_two, "p_fail"] == 0.2).all()
    assert (served.loc[~by_two, "p_fail"] == 0.1).all() and (served["p_fail_challenger"] == 0.2).all()
    shadow = lc.serve(
        dies,
        {**plan, "challenger": {**plan["challenger"], "state": "approved"}},
        {1: Constant(0.1), 2: Constant(0.2)},
    )
    assert (shadow["model_version"] == 1).all() and (shadow["p_fail_challenger"] == 0.2).all()
