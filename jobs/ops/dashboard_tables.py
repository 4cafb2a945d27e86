"""The dashboard's tables: plain functions on DataFrames (no Luigi, nothing drawn).

Each computes the table behind one chart of the operations dashboard (jobs/ops/dashboard.py) from
the run history, the SLA misses or the alerts, plus the page's headline numbers.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import pandas as pd

from jobs.domain import pages
from jobs.ops.alerts import SEVERITIES
from jobs.ops.workflows import WORKFLOWS

STATUSES = ("DONE", "FAILED", "KILLED", "RUNNING")
ENDED = ("DONE", "FAILED", "KILLED")
SHARED = "(shared)"  # the workflow label of tasks every workflow uses (ConvertFile)


class Summary(NamedTuple):
    """A workflow's summary task family and the time its run may take (jobs/ops/sla.py)."""

    family: str
    budget: dt.timedelta


def sla_budgets() -> dict[str, Summary]:
    return {name: Summary(w.summary_task, w.budget()) for name, w in WORKFLOWS.items()}


def _json_column(values: pd.Series) -> list[dict[str, Any]]:
    """The dicts of a JSON text column (NULL, e.g. of a run still running: an empty dict)."""
    return [json.loads(v) if isinstance(v, str) and v else {} for v in values]


def _utc_naive(values: pd.Series) -> pd.Series:
    """UTC timestamps without their zone: matplotlib's date axes and day grouping want them plain."""
    values = pd.to_datetime(values, utc=True)
    return values.dt.tz_convert(None)


def _days(values: pd.Series) -> pd.Series:
    return _utc_naive(values).dt.normalize()


def daily_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per UTC day of `started`: task runs by effective status, `runs`, and `success_rate`, the
    share of the runs that ended (done, failed, killed) that were done; a day with nothing
    ended yet has no rate (NaN) rather than 0."""
    columns = [*STATUSES, "runs", "success_rate"]
    if runs.empty:
        return pd.DataFrame(columns=columns, index=pd.DatetimeIndex([], name="day"), dtype=float)
    counts = pd.crosstab(_days(runs["started"]).rename("day"), runs["effective_status"])
    counts = counts.reindex(columns=list(STATUSES), fill_value=0)
    counts["runs"] = counts[list(STATUSES)].sum(axis=1)
    ended = counts[list(ENDED)].sum(axis=1)
    counts["success_rate"] = (counts["DONE"] / ended.where(ended > 0)).astype(float)
    counts.columns.name = None
    return counts[columns]


def workflow_durations(runs: pd.DataFrame, budgets: Mapping[str, Summary] | None = None) -> pd.DataFrame:
    """One row per finished summary run (WaferYieldDaily, FabMergeHourly, QualityMonitor): the
    wall time from the first task start of its invocation (one luigi command) to the summary's
    finish, against the workflow's SLA budget. A backfill's later periods therefore include the
    earlier ones' work: that is how long the command took to deliver them."""
    budgets = sla_budgets() if budgets is None else budgets
    columns = ["workflow", "period", "invocation", "status", "started", "finished", "minutes"]
    columns += ["budget_minutes", "over"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    first_start = runs.groupby("invocation")["started"].min()
    frames = []
    for workflow, summary in budgets.items():
        done = runs[(runs["family"] == summary.family) & runs["finished"].notna()]
        if done.empty:
            continue
        started = done["invocation"].map(first_start)
        frame = pd.DataFrame(
            {
                "workflow": workflow,
                "period": [", ".join(map(str, p.values())) for p in _json_column(done["params"])],
                "invocation": done["invocation"],
                "status": done["effective_status"],
                "started": _utc_naive(started),
                "finished": _utc_naive(done["finished"]),
                "minutes": (done["finished"] - started).dt.total_seconds() / 60,
                "budget_minutes": summary.budget.total_seconds() / 60,
            }
        )
        frame["over"] = frame["minutes"] > frame["budget_minutes"]
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).sort_values(["workflow", "finished"], ignore_index=True)


def _workflow_labels(runs: pd.DataFrame) -> pd.Series:
    return runs["workflow"].fillna("").replace("", SHARED)


def outcomes(runs: pd.DataFrame) -> pd.DataFrame:
    """Task runs per workflow (rows) and effective status (columns)."""
    if runs.empty:
        return pd.DataFrame(columns=list(STATUSES), dtype=int)
    counts = pd.crosstab(_workflow_labels(runs).rename("workflow"), runs["effective_status"])
    counts = counts.reindex(columns=list(STATUSES), fill_value=0)
    counts.columns.name = None
    return counts


def _short(text: str) -> str:
    """A decision without its trailing figures, so days group: 'skipped: insufficient data
    (0 labelled days < 2)' -> 'skipped: insufficient data'."""
    return re.sub(r"\s*\([^()]*\)\s*$", "", text)


def decisions(runs: pd.DataFrame) -> pd.DataFrame:
    """What the done runs decided or reported (their manifests' `decision`, else `status`):
    columns family, outcome, runs; most frequent first."""
    columns = ["family", "outcome", "runs"]
    done = runs[runs["effective_status"] == "DONE"]
    rows = [
        (family, _short(str(facts.get("decision") or facts["status"])))
        for family, facts in zip(done["family"], _json_column(done["facts"]), strict=True)
        if facts.get("decision") or facts.get("status")
    ]
    if not rows:
        return pd.DataFrame(columns=columns)
    counts = pd.DataFrame(rows, columns=columns[:2]).value_counts().rename("runs").reset_index()
    return counts.sort_values(["runs", "family", "outcome"], ascending=[False, True, True], ignore_index=True)


def sla_violations(misses: pd.DataFrame) -> pd.DataFrame:
    """SLA misses per UTC day of their deadline (rows) and workflow (columns)."""
    if misses.empty:
        return pd.DataFrame(index=pd.DatetimeIndex([], name="day"), dtype=int)
    counts = pd.crosstab(_days(misses["deadline"]).rename("day"), misses["workflow"])
    counts.columns.name = None
    return counts


def stage_durations(runs: pd.DataFrame) -> pd.DataFrame:
    """Seconds of the done runs per task family: runs, min, median, p90, max; slowest median first."""
    columns = ["runs", "min", "median", "p90", "max"]
    done = runs[(runs["effective_status"] == "DONE") & runs["seconds"].notna()]
    if done.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="family"))
    seconds = done.groupby("family")["seconds"]
    table = pd.DataFrame(
        {
            "runs": seconds.size(),
            "min": seconds.min(),
            "median": seconds.median(),
            "p90": seconds.quantile(0.9),
            "max": seconds.max(),
        }
    )
    return table.sort_values("median", ascending=False)


def data_volume(runs: pd.DataFrame) -> pd.DataFrame:
    """The STDF landed per fab and partition date, from the done IngestFab runs: columns date,
    fab, mb (the bytes of the files read, 10^6 bytes to a MB), rows (rows written), status. A
    day ingested again (a late fab reopening it, a version bump) counts once: its latest run."""
    columns = ["date", "fab", "mb", "rows", "status"]
    ingests = runs[(runs["family"] == "IngestFab") & (runs["effective_status"] == "DONE")]
    if ingests.empty:
        return pd.DataFrame(columns=columns)
    params = _json_column(ingests["params"])
    table = pd.DataFrame(
        {
            "date": pd.to_datetime([p["date"] for p in params]),
            "fab": [p["fab"] for p in params],
            "mb": ingests["bytes"].fillna(0).to_numpy() / 1e6,
            "rows": ingests["rows"].fillna(0).astype(int).to_numpy(),
            "status": [f.get("status", "") for f in _json_column(ingests["facts"])],
            "finished": ingests["finished"].to_numpy(),
        }
    )
    table = table.sort_values("finished").drop_duplicates(["date", "fab"], keep="last")
    return table.sort_values(["date", "fab"], ignore_index=True)[columns]


MODEL_COLUMNS = [
    *("date", "champion", "challenger", "challenger_state", "rollout_share"),
    *("rolled_back", "rollout_stopped", "kept_out"),
    *("candidate", "decision", "candidate_auc", "champion_auc"),
]


def model_auc(runs: pd.DataFrame) -> pd.DataFrame:
    """Per day: the serving plan of the Lifecycle run (champion, challenger, its state and rollout
    share); that day's rollbacks ("v3 -> v2"), stopped rollouts ("v4") and candidates kept out
    ("v5, v6": they lost, or a rollout was running); and the candidate validated for that day (the
    ValidateCandidate run whose `day` it is: version, decision, its and the champion's holdout
    AUC). The latest run of a day, and of a version, counts."""
    done = runs[runs["effective_status"] == "DONE"].sort_values("finished")
    days: dict[str, dict[str, Any]] = {}
    for family, params, fact in zip(done["family"], _json_column(done["params"]), _json_column(done["facts"]),
                                    strict=True):  # fmt: skip
        if family == "Lifecycle" and params.get("date"):
            days.setdefault(params["date"], {}).update(_plan_facts(fact))
        elif family == "ValidateCandidate" and fact.get("day"):
            days.setdefault(fact["day"], {}).update(
                candidate=fact.get("version"),
                decision=fact.get("decision", ""),
                candidate_auc=fact.get("candidate_auc"),
                champion_auc=fact.get("champion_auc"),
            )
    table = pd.DataFrame([{"date": pd.Timestamp(d), **v} for d, v in days.items()], columns=MODEL_COLUMNS)
    for column in ("champion", "challenger", "candidate"):
        table[column] = table[column].astype("Int64")
    for column in ("rollout_share", "candidate_auc", "champion_auc"):
        table[column] = table[column].astype(float)
    for column in ("challenger_state", "rolled_back", "rollout_stopped", "kept_out", "decision"):
        table[column] = table[column].fillna("").astype(str)
    return table.sort_values("date", ignore_index=True)


def _versions(happened: list[dict[str, Any]], action: str) -> str:
    """The versions an action of a lifecycle day touched: "v4", "v3 -> v2" (a rollback), joined."""
    return ", ".join(
        f"v{e['version']}" + (f" -> v{e['to']}" if "to" in e else "")
        for e in happened
        if e["action"] == action
    )


def _plan_facts(fact: dict[str, Any]) -> dict[str, Any]:
    happened = fact.get("happened", [])
    return {
        "champion": fact.get("champion"),
        "challenger": fact.get("challenger"),
        "challenger_state": fact.get("challenger_state") or "",
        "rollout_share": fact.get("rollout_share", 0.0),
        "rolled_back": _versions(happened, "rolled back"),
        "rollout_stopped": _versions(happened, "rollout stopped"),
        "kept_out": _versions(happened, "kept out"),
    }


def alerts_frame(alerts: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The alerts as a table (time as UTC), oldest first."""
    columns = ["time", "workflow", "task", "severity", "message", "key", "sent"]
    table = pd.DataFrame(list(alerts), columns=columns)
    table["time"] = _utc_naive(table["time"]) if len(table) else pd.to_datetime(table["time"])
    return table.sort_values("time", ignore_index=True)


def alerts_per_day(alerts: pd.DataFrame) -> pd.DataFrame:
    """Alerts per UTC day (rows) and severity (columns, in order of severity)."""
    if alerts.empty:
        return pd.DataFrame(columns=list(SEVERITIES), index=pd.DatetimeIndex([], name="day"), dtype=int)
    counts = pd.crosstab(_days(alerts["time"]).rename("day"), alerts["severity"])
    counts = counts.reindex(columns=list(SEVERITIES), fill_value=0)
    counts.columns.name = None
    return counts


def totals(runs: pd.DataFrame, misses: pd.DataFrame, alerts: pd.DataFrame) -> dict[str, Any]:
    """The headline numbers of the page."""
    status = runs["effective_status"].value_counts() if len(runs) else pd.Series(dtype=int)
    ended = int(sum(status.get(s, 0) for s in ENDED))
    return {
        "task runs": len(runs),
        "luigi commands": runs["invocation"].nunique() if len(runs) else 0,
        **{s.lower(): int(status.get(s, 0)) for s in STATUSES},
        "success rate": f"{status.get('DONE', 0) / ended:.1%}" if ended else "–",
        "SLA misses": len(misses),
        "alerts": len(alerts),
        "MB landed": f"{data_volume(runs)['mb'].sum():.1f}",
        "first run": pages.when(runs["started"].min()) if len(runs) else "–",
        "last run": pages.when(runs["started"].max()) if len(runs) else "–",
    }
