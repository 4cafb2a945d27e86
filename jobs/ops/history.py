"""Run history: every task run's start, end, status, duration and row counts, in SQLite.

Luigi event handlers write `{root}/history/runs.sqlite` from whichever process runs the task, so
the history is the same under the local scheduler (`scripts/demo`) and under luigid (whose own
`[task_history]` database records scheduler events, but not our rows and figures). The SLA
check (`jobs/ops/sla.py`) records its misses in the same file, and `scripts/dashboard` reads it.

A run killed with SIGKILL stays RUNNING here; `effective_status` reports it as KILLED once its
process is gone. A task suspended for its dynamic dependencies is SUSPENDED until it runs again
(RUNNING, in the same row); one that found its output made by another process while it waited
for the task's lock (jobs/pipeline/locks.py) is SKIPPED.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import luigi
import pandas as pd

from jobs.files import pid_alive
from jobs.pipeline.settings import paths

logger = logging.getLogger("luigi-interface")

# One luigi command: its worker processes (forked) inherit it, so their runs share it.
INVOCATION_ENV = "STDF_JOBS_INVOCATION"
os.environ.setdefault(INVOCATION_ENV, uuid.uuid4().hex[:12])

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    invocation TEXT NOT NULL,   -- one luigi command line
    task_id TEXT NOT NULL,
    family TEXT NOT NULL,
    workflow TEXT NOT NULL,     -- wafer_yield, fab_merge, quality_monitor, or '' (shared tasks)
    params TEXT NOT NULL,       -- JSON of the task's parameters
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started TEXT NOT NULL,      -- ISO UTC
    finished TEXT,
    status TEXT NOT NULL,       -- RUNNING, DONE, FAILED, SUSPENDED, SKIPPED (done by another process)
    seconds REAL,
    rows INTEGER,               -- rows written: the dies, where the manifest counts them
    bytes INTEGER,              -- bytes read (the manifest's inputs)
    facts TEXT,                 -- JSON: the manifest's status, decision, AUCs, fab
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_task ON runs (task_id, status);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started);
CREATE TABLE IF NOT EXISTS sla_misses (
    workflow TEXT NOT NULL,
    period TEXT NOT NULL,       -- the day, hour or window the run is for
    deadline TEXT NOT NULL,     -- ISO UTC
    reason TEXT NOT NULL,       -- not done, still running, finished late
    detected TEXT NOT NULL,     -- ISO UTC, when the check found it (and alerted)
    PRIMARY KEY (workflow, period)
);
"""


def history_file() -> Path:
    return paths().root_path() / "history" / "runs.sqlite"


def connect(path: Path | None = None) -> sqlite3.Connection:
    """The history database, created on first use. WAL: workers write while the dashboard reads."""
    path = path or history_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=60, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(SCHEMA)
    return con


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _workflow(task: luigi.Task) -> str:
    return getattr(task, "workflow", "") or ""


def record_start(task: luigi.Task) -> None:
    """Insert a RUNNING row; a task resumed after its dynamic dependencies keeps its first row."""
    try:
        invocation = os.environ[INVOCATION_ENV]
        with connect() as con:
            row = con.execute(
                "SELECT id FROM runs WHERE invocation=? AND task_id=? AND status IN ('RUNNING', 'SUSPENDED')",
                (invocation, task.task_id),
            ).fetchone()
            if row:
                con.execute(
                    "UPDATE runs SET pid=?, status='RUNNING', finished=NULL, seconds=NULL WHERE id=?",
                    (os.getpid(), row[0]),
                )
                return
            params = json.dumps(task.to_str_params(only_significant=True))
            con.execute(
                "INSERT INTO runs (invocation, task_id, family, workflow, params, host, pid, started, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'RUNNING')",
                (invocation, task.task_id, task.task_family, _workflow(task), params,
                 socket.gethostname(), os.getpid(), _now()),
            )  # fmt: skip
    except Exception as error:  # the history must never fail the task it records
        logger.error("run history: could not record the start of %s: %s", task.task_id, error)


def record_success(task: luigi.Task) -> None:
    _finish(task, "DONE", None)


def record_failure(task: luigi.Task, exception: BaseException) -> None:
    _finish(task, "FAILED", f"{type(exception).__name__}: {exception}"[:2000])


def record_suspended(task: luigi.Task) -> None:
    """The task yielded dynamic dependencies that are not done: its process ends, and the task
    runs again (from the top) once they are."""
    _finish(task, "SUSPENDED", None)


def record_done_elsewhere(task: luigi.Task) -> None:
    """Another process ran the task while this one waited for its lock: not run here (luigi's
    SUCCESS that follows finds no RUNNING row, and leaves this one)."""
    _finish(task, "SKIPPED", None)


def _finish(task: luigi.Task, status: str, error: str | None) -> None:
    try:
        rows, nbytes, facts = manifest_figures(task) if status == "DONE" else (None, None, {})
        finished = _now()
        with connect() as con:
            row = con.execute(
                "SELECT id, started FROM runs WHERE invocation=? AND task_id=? AND status='RUNNING'",
                (os.environ[INVOCATION_ENV], task.task_id),
            ).fetchone()
            if row is None:
                return
            seconds = dt.datetime.fromisoformat(finished) - dt.datetime.fromisoformat(row[1])
            con.execute(
                "UPDATE runs SET finished=?, status=?, seconds=?, rows=?, bytes=?, facts=?, error=?"
                " WHERE id=?",
                (finished, status, round(seconds.total_seconds(), 3), rows, nbytes,
                 json.dumps(facts, default=str), error, row[0]),
            )  # fmt: skip
    except Exception as failure:
        logger.error("run history: could not record the end of %s: %s", task.task_id, failure)


def manifest_figures(task: luigi.Task) -> tuple[int | None, int | None, dict[str, Any]]:
    """(rows written, bytes read, facts) from a finished stage's manifest; Nones for other tasks."""
    if not hasattr(task, "manifest"):
        return None, None, {}
    try:
        manifest = task.manifest()
    except (OSError, ValueError):
        return None, None, {}
    rows = manifest.get("rows")
    if isinstance(rows, dict):  # the dies when counted (the other entries are per fab or per die)
        rows = rows["dies"] if "dies" in rows else sum(v for v in rows.values() if isinstance(v, int))
    nbytes = sum(i.get("bytes", 0) for i in manifest.get("inputs", []) if isinstance(i, dict))
    texts = ("status", "decision", "fab", "day", "challenger_state")
    facts: dict[str, Any] = {k: manifest[k] for k in texts if isinstance(manifest.get(k), str)}
    facts.update(_model_facts(manifest))
    return rows if isinstance(rows, int) else None, nbytes or None, facts


def _model_facts(manifest: dict[str, Any]) -> dict[str, Any]:
    """A validation's version and holdout AUCs (ValidateCandidate); the day's serving plan and what
    happened to it, each event's action, version, share and `to` (Lifecycle)."""
    facts: dict[str, Any] = {}
    for key in ("version", "champion", "challenger"):  # version numbers (a validation's champion: metrics)
        if isinstance(manifest.get(key), int) and not isinstance(manifest[key], bool):
            facts[key] = manifest[key]
    if isinstance(manifest.get("rollout_share"), int | float):
        facts["rollout_share"] = manifest["rollout_share"]
    for model in ("candidate", "champion"):
        metrics = manifest.get(model)
        holdout = metrics.get("holdout") if isinstance(metrics, dict) else None
        if isinstance(holdout, dict) and "auc" in holdout:
            facts[f"{model}_auc"] = holdout["auc"]
    if isinstance(manifest.get("happened"), list):
        keep = ("action", "version", "share", "to")
        facts["happened"] = [
            {k: e[k] for k in keep if k in e} for e in manifest["happened"] if isinstance(e, dict)
        ]
    return facts


def read_runs(path: Path | None = None, since: dt.datetime | None = None) -> pd.DataFrame:
    """The runs (optionally those started since a time), with `effective_status` added."""
    with connect(path) as con:
        query, args = "SELECT * FROM runs", ()
        if since is not None:
            query, args = query + " WHERE started >= ?", (since.astimezone(dt.UTC).isoformat(),)
        runs = pd.read_sql_query(query + " ORDER BY id", con, params=args)
    for column in ("started", "finished"):
        runs[column] = pd.to_datetime(runs[column], utc=True, format="ISO8601")
    runs["effective_status"] = [effective_status(r) for r in runs.itertuples()]
    return runs


def effective_status(run: Any) -> str:
    """RUNNING only while the process that runs it lives (on this host); KILLED after."""
    if run.status != "RUNNING" or run.host != socket.gethostname():
        return run.status
    return "RUNNING" if pid_alive(int(run.pid)) else "KILLED"


def read_sla_misses(path: Path | None = None) -> pd.DataFrame:
    with connect(path) as con:
        misses = pd.read_sql_query("SELECT * FROM sla_misses ORDER BY deadline", con)
    for column in ("deadline", "detected"):
        misses[column] = pd.to_datetime(misses[column], utc=True, format="ISO8601")
    return misses
