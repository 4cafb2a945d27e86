"""The operations dashboard: its figures on small hand-built tables with exact answers, and the
whole dashboard rendered from a real run history (a small simulated floor run by Luigi)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi
import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from luigi.execution_summary import LuigiStatusCode

from jobs.domain import pages
from jobs.ops import dashboard
from jobs.ops.dashboard_tables import (
    Summary,
    alerts_frame,
    alerts_per_day,
    daily_runs,
    data_volume,
    decisions,
    model_auc,
    outcomes,
    sla_violations,
    stage_durations,
    workflow_durations,
)
from jobs.ops.history import connect, read_runs
from jobs.pipeline.landing import landed_files, landing_day
from jobs.simulation.simulate import main as simulate
from jobs.wafer_yield import IngestFab, ValidateCandidate, WaferYieldDaily
from tests.helpers import REPO, luigi_settings

CHARTS = [
    "runs_per_day",
    "duration_vs_sla",
    "outcomes",
    "sla_violations",
    "stage_durations",
    "data_volume",
    "model_auc",
    "alerts_per_day",
]

# --- hand-built runs ------------------------------------------------------------------------------

T0 = pd.Timestamp("2026-11-20T02:00", tz="UTC")


def run(
    family: str = "Features",
    status: str = "DONE",
    start: str = "0min",
    seconds: float = 60,
    invocation: str = "a",
    workflow: str = "wafer_yield",
    params: dict[str, str] | None = None,
    facts: dict[str, Any] | None = None,
    **columns: Any,
) -> dict[str, Any]:
    """One row of `read_runs`; `start` is an offset from T0 (a pandas timedelta string)."""
    started = T0 + pd.Timedelta(start)
    ended = status != "RUNNING"
    return {
        "id": 0,
        "invocation": invocation,
        "task_id": f"{family}_{start}",
        "family": family,
        "workflow": workflow,
        "params": json.dumps(params or {"date": "2026-11-19"}),
        "host": "h",
        "pid": 1,
        "started": started,
        "finished": started + pd.Timedelta(seconds=seconds) if ended else pd.NaT,
        "status": status,
        "seconds": seconds if ended else np.nan,
        "rows": np.nan,
        "bytes": np.nan,
        "facts": json.dumps(facts or {}) if ended else None,
        "error": None,
        "effective_status": status,
        **columns,
    }


def runs(*rows: dict[str, Any]) -> pd.DataFrame:
    table = pd.DataFrame(list(rows))
    for column in ("started", "finished"):
        table[column] = pd.to_datetime(table[column], utc=True)
    return table


def no_runs() -> pd.DataFrame:
    return read_runs(Path(":memory:"))


def test_daily_runs_counts_each_status_and_the_success_rate_of_ended_runs() -> None:
    daily = daily_runs(
        runs(
            run(status="DONE"),
            run(status="DONE", start="1h"),
            run(status="FAILED", start="2h"),
            run(status="DONE", start="1D"),
            run(status="KILLED", start="1D1h"),
            run(status="RUNNING", start="1D2h"),  # not ended: not in the rate
            run(status="RUNNING", start="2D"),
        )
    )
    assert list(daily.index) == list(pd.to_datetime(["2026-11-20", "2026-11-21", "2026-11-22"]))
    assert daily["runs"].tolist() == [3, 3, 1]
    assert daily.loc["2026-11-20", ["DONE", "FAILED", "KILLED", "RUNNING"]].tolist() == [2, 1, 0, 0]
    assert daily["success_rate"].iloc[0] == pytest.approx(2 / 3)
    assert daily["success_rate"].iloc[1] == pytest.approx(1 / 2)
    assert np.isnan(daily["success_rate"].iloc[2])  # nothing ended that day: no rate, not 0 %
    assert daily_runs(no_runs()).empty


def summary(start: str, invocation: str, date: str) -> dict[str, Any]:
    """A WaferYieldDaily run of a minute."""
    return run("WaferYieldDaily", start=start, seconds=60, invocation=invocation, params={"date": date})


def test_workflow_durations_run_from_the_commands_first_start_to_the_summarys_finish() -> None:
    budgets = {"wafer_yield": Summary("WaferYieldDaily", dt.timedelta(hours=4))}
    table = workflow_durations(
        runs(
            run("IngestFab", start="0min", invocation="night"),
            summary("179min", "night", "2026-11-19"),
            run("IngestFab", start="1D", invocation="backfill"),
            summary("1D2h", "backfill", "2026-11-18"),
            summary("1D299min", "backfill", "2026-11-19"),
            run("Features", start="3D", invocation="other"),  # no summary: no point
        ),
        budgets,
    )
    assert table["period"].tolist() == ["2026-11-19", "2026-11-18", "2026-11-19"]
    assert table["minutes"].tolist() == pytest.approx([180, 121, 300])
    assert table["over"].tolist() == [False, False, True]
    assert set(table["budget_minutes"]) == {240}
    assert workflow_durations(no_runs(), budgets).empty


def test_outcomes_count_statuses_per_workflow_and_decisions_without_their_figures() -> None:
    skipped = "skipped: insufficient data"
    table = runs(
        run("ConvertFile", workflow=""),
        run("ConvertFile", workflow="", status="FAILED"),
        run("Train", facts={"status": "skipped", "decision": f"{skipped} (0 labelled days < 2)"}),
        run("Train", facts={"status": "skipped", "decision": f"{skipped} (1 labelled days < 2)"}),
        run("ValidateCandidate", facts={"decision": "won"}),
        run("IngestFab", facts={"status": "offline"}),
        run("ValidateCandidate", status="FAILED"),
    )
    counts = outcomes(table)
    assert counts.loc["(shared)"].tolist() == [1, 1, 0, 0]
    assert counts.loc["wafer_yield"].tolist() == [4, 1, 0, 0]
    decided = decisions(table)
    assert decided.values.tolist() == [
        ["Train", "skipped: insufficient data", 2],
        ["IngestFab", "offline", 1],
        ["ValidateCandidate", "won", 1],
    ]
    assert outcomes(no_runs()).empty and decisions(no_runs()).empty


def test_sla_violations_per_day_of_the_deadline_and_workflow() -> None:
    misses = pd.DataFrame(
        {
            "workflow": ["fab_merge", "fab_merge", "wafer_yield"],
            "period": ["2026-11-20T01", "2026-11-20T05", "2026-11-20"],
            "deadline": pd.to_datetime(["2026-11-20T04", "2026-11-20T08", "2026-11-21T06"], utc=True),
            "reason": ["finished late", "not done", "still running"],
        }
    )
    table = sla_violations(misses)
    assert table.loc["2026-11-20"].to_dict() == {"fab_merge": 2, "wafer_yield": 0}
    assert table.loc["2026-11-21"].to_dict() == {"fab_merge": 0, "wafer_yield": 1}
    assert sla_violations(misses.iloc[:0]).empty


def test_stage_durations_of_done_runs_per_family() -> None:
    table = stage_durations(
        runs(
            *(run("Features", seconds=s) for s in range(1, 11)),
            run("Features", status="FAILED", seconds=1000),  # failed runs are not stage durations
            run("Lifecycle", seconds=0.5),
        )
    )
    assert table.index.tolist() == ["Features", "Lifecycle"]  # slowest median first
    assert table.loc["Features"].tolist() == pytest.approx([10, 1, 5.5, 9.1, 10])
    assert table.loc["Lifecycle", "median"] == 0.5


def test_data_volume_per_fab_and_partition_date_counts_a_reingested_day_once() -> None:
    def ingest(fab: str, date: str, nbytes: float, rows: int, start: str, status: str = "ok") -> dict:
        params = {"date": date, "fab": fab}
        return run("IngestFab", start=start, params=params, bytes=nbytes, rows=rows, facts={"status": status})

    table = data_volume(
        runs(
            ingest("fab1", "2026-11-19", 2_500_000, 100, "0min"),
            ingest("fab2", "2026-11-19", np.nan, 0, "1min", status="offline"),
            ingest("fab2", "2026-11-19", 1_000_000, 40, "1D"),  # the late fab delivered: the day again
            ingest("fab1", "2026-11-18", 500_000, 20, "2D"),  # a backfill, run later
            run("IngestFab", status="FAILED", start="3D", params={"date": "2026-11-17", "fab": "fab1"}),
        )
    )
    assert table.values.tolist() == [
        [pd.Timestamp("2026-11-18"), "fab1", 0.5, 20, "ok"],
        [pd.Timestamp("2026-11-19"), "fab1", 2.5, 100, "ok"],
        [pd.Timestamp("2026-11-19"), "fab2", 1.0, 40, "ok"],
    ]
    assert data_volume(no_runs()).empty


def lifecycle_run(
    day: str, start: str, champion: int | None, happened: list | None = None, **plan: Any
) -> dict:
    """A Lifecycle run as the run history records it (jobs/ops/history.py manifest_figures)."""
    facts = {"rollout_share": 0.0, "happened": happened or [], **plan}
    facts.update({"champion": champion} if champion else {})
    return run("Lifecycle", start=start, params={"date": day}, facts=facts)


def validation_run(
    version: int, day: str, start: str, decision: str, auc: float, champion: float | None
) -> dict:
    facts = {"decision": decision, "day": day, "version": version, "candidate_auc": auc}
    facts.update({"champion_auc": champion} if champion else {})
    return run("ValidateCandidate", start=start, params={"version": str(version)}, facts=facts)


MODEL_DAYS = [
    lifecycle_run("2026-11-11", "0D", None),
    validation_run(1, "2026-11-12", "1D", "won", 0.80, None),
    lifecycle_run("2026-11-12", "1D1min", 1, [{"action": "challenger", "version": 1},
                                              {"action": "champion", "version": 1}]),
    validation_run(2, "2026-11-13", "2D", "won", 0.84, 0.80),
    lifecycle_run("2026-11-13", "2D1min", 1, challenger=2, challenger_state="approved"),
    validation_run(3, "2026-11-14", "3D", "lost", 0.60, 0.81),
    validation_run(3, "2026-11-14", "3D2min", "lost", 0.70, 0.81),  # validated again: the latest counts
    lifecycle_run("2026-11-14", "3D3min", 1, [{"action": "rollout", "version": 2, "share": 0.1},
                                              {"action": "kept out", "version": 3}],
                  challenger=2, challenger_state="rolling_out", rollout_share=0.1),
    lifecycle_run("2026-11-15", "4D", 1, challenger=2, challenger_state="rolling_out", rollout_share=0.5),
    lifecycle_run("2026-11-16", "5D", 2, [{"action": "champion", "version": 2}]),
    run("Lifecycle", start="6D", status="FAILED", params={"date": "2026-11-17"}),
    validation_run(4, "2026-11-17", "6D1min", "won", 0.86, 0.83),
    lifecycle_run("2026-11-17", "6D2min", 1, [{"action": "rolled back", "version": 2, "to": 1}],
                  challenger=4, challenger_state="awaiting_approval"),
    validation_run(5, "2026-11-18", "7D", "won", 0.87, 0.83),
    lifecycle_run("2026-11-18", "7D1min", 1, [{"action": "kept out", "version": 5}],
                  challenger=4, challenger_state="rolling_out", rollout_share=0.1),
    lifecycle_run("2026-11-19", "8D", 1, [{"action": "rollout stopped", "version": 4, "share": 0.1}]),
]  # fmt: skip


def test_model_days_show_who_serves_rollbacks_stopped_rollouts_and_candidate_aucs(tmp_path: Path) -> None:
    table = model_auc(runs(*MODEL_DAYS))
    assert table["date"].tolist() == list(pd.date_range("2026-11-11", "2026-11-19"))
    assert table["champion"].tolist() == [pd.NA, 1, 1, 1, 1, 2, 1, 1, 1]
    assert table["challenger"].tolist() == [pd.NA, pd.NA, 2, 2, 2, pd.NA, 4, 4, pd.NA]
    assert table["challenger_state"].tolist()[2:5] == ["approved", "rolling_out", "rolling_out"]
    assert table["rollout_share"].tolist() == [0, 0, 0, 0.1, 0.5, 0, 0, 0.1, 0]
    assert table["rolled_back"].tolist() == [""] * 6 + ["v2 -> v1", "", ""]
    assert table["rollout_stopped"].tolist() == [""] * 8 + ["v4"]
    assert table["kept_out"].tolist() == ["", "", "", "v3", "", "", "", "v5", ""]
    validated = table[table["candidate"].notna()]
    assert validated["candidate"].tolist() == [1, 2, 3, 4, 5]
    assert validated["decision"].tolist() == ["won", "won", "lost", "won", "won"]
    assert validated["candidate_auc"].tolist() == [0.80, 0.84, 0.70, 0.86, 0.87]
    assert validated["champion_auc"].tolist()[1:] == [0.80, 0.81, 0.83, 0.83]
    assert np.isnan(validated["champion_auc"].iloc[0])  # the first model had no champion to beat
    assert model_auc(no_runs()).empty

    drawn = dashboard.plot_model_auc(table)
    serving, auc = drawn.axes[:2]
    texts = {t.get_text() for t in serving.texts}
    assert {"v1", "v2", "v2 10%", "v2 50%", "v4 10%", "v2 approved", "v4 awaiting approval"} <= texts
    assert {"v2 → v1", "v4", "no model"} <= texts  # the rollback and the stopped rollout, marked
    assert [t.get_text() for t in serving.get_legend().get_texts()] == [
        "v1", "v2", "v4", "rolled back", "rollout stopped"
    ]  # fmt: skip
    assert {t.get_text() for t in auc.texts} == {"v1 0.800", "v2 0.840", "v3 0.700", "v4 0.860", "v5 0.870"}
    assert [t.get_text() for t in auc.get_legend().get_texts()] == [
        "champion (holdout)", "candidate won", "candidate won, kept out (a rollout ran)", "candidate lost"
    ]  # fmt: skip
    (tmp_path / "model_auc.png").write_bytes(pages.png(drawn))
    assert_real_png(tmp_path / "model_auc.png")


def test_alerts_per_day_by_severity() -> None:
    def alert(time: str, severity: str) -> dict[str, Any]:
        return {"time": time, "workflow": "w", "task": "t", "severity": severity, "message": "m", "key": "k"}

    table = alerts_per_day(
        alerts_frame(
            [
                alert("2026-11-20T23:59:00+00:00", "error"),
                alert("2026-11-21T00:00:00+00:00", "warning"),
                alert("2026-11-21T09:00:00+01:00", "warning"),  # 08:00 UTC
                alert("2026-11-21T10:00:00+00:00", "critical"),
            ]
        )
    )
    assert table.loc["2026-11-20"].tolist() == [0, 0, 1, 0]  # info, warning, error, critical
    assert table.loc["2026-11-21"].tolist() == [0, 2, 0, 1]
    assert alerts_per_day(alerts_frame([])).empty


# --- rendering -----------------------------------------------------------------------------------------


def assert_real_png(path: Path) -> None:
    """A PNG file of a drawn chart: the signature, a sensible size, and not one colour."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    pixels = matplotlib.image.imread(path)[..., :3]
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 800, (path, pixels.shape)
    ink = (pixels < 0.9).any(axis=2).mean()  # the share of pixels that are not (near) white
    assert 0.005 < ink < 0.9, (path, ink)


def embedded_pngs(page: str) -> dict[str, bytes]:
    figure = r'<figure id="(\w+)"><img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"'
    found = re.findall(figure, page)
    return {name: base64.b64decode(data) for name, data in found}


def test_an_empty_root_renders_charts_that_say_there_is_no_data(tmp_path: Path) -> None:
    written = dashboard.render(tmp_path, days=30, out=tmp_path / "out")
    assert [p.name for p in written] == [f"{name}.png" for name in CHARTS] + ["index.html"]
    for png in written[:-1]:
        assert_real_png(png)
    page = written[-1].read_text()
    assert set(embedded_pngs(page)) == set(CHARTS)
    assert "<th>task runs</th><td>0</td>" in page and "no failed or killed runs in this window" in page
    assert not (tmp_path / "history").exists()  # reading an empty root creates no history there


def test_the_page_escapes_what_it_shows_and_keeps_to_the_window(tmp_path: Path) -> None:
    now = dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC)
    with connect(tmp_path / "history" / "runs.sqlite") as con:
        for days_ago, error in ((40, "old"), (1, "ValueError: <script>x</script>")):
            started = (now - dt.timedelta(days=days_ago)).isoformat()
            con.execute(
                "INSERT INTO runs (invocation, task_id, family, workflow, params, host, pid, started,"
                " finished, status, seconds, error)"
                " VALUES ('i', 'Train_x', 'Train', 'wafer_yield', '{}', 'h', 1, ?, ?, 'FAILED', 1, ?)",
                (started, started, error),
            )
        con.execute(
            "INSERT INTO sla_misses VALUES ('wafer_yield', '2026-11-22', ?, 'not done', ?)",
            ((now - dt.timedelta(days=1)).isoformat(), now.isoformat()),
        )
    (tmp_path / "alerts").mkdir()
    alert = {"time": now.isoformat(), "workflow": "w", "task": "t", "severity": "error", "message": "<b>&"}
    (tmp_path / "alerts" / "alerts.jsonl").write_text(json.dumps(alert) + "\n")
    page = dashboard.render(tmp_path, days=30, out=tmp_path / "out", now=now)[-1].read_text()
    # the run of 40 days ago is outside the window
    assert "<th>task runs</th><td>1</td>" in page and "<th>failed</th><td>1</td>" in page
    assert "ValueError: &lt;script&gt;x&lt;/script&gt;" in page and "<script" not in page
    assert "&lt;b&gt;&amp;" in page and "<td>2026-11-22</td>" in page


def test_main_refuses_a_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dashboard.main(["--root", str(tmp_path / "nowhere")]) == 2
    assert "no data root" in capsys.readouterr().err


# --- a real history: a small floor run by Luigi -------------------------------------------------------

FIRST = dt.date(2026, 11, 10)
DAYS = [FIRST + dt.timedelta(days=i) for i in range(3)]
# auto_approve: the first model serves on the day it is validated (no person in the loop)
SETTINGS = {"wafer_yield": {"fabs": "fab1,fab2", "min_devices": 1000}, "models": {"auto_approve": "true"}}


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Three days of two fabs (fab2 offline on the last), run by WaferYieldDaily: a real
    runs.sqlite and alerts.jsonl."""
    root = tmp_path_factory.mktemp("floor")
    args = ["--root", str(root), "--start", str(FIRST), "--days", "3", "--fabs", "fab1,fab2", "--lots", "1"]
    assert simulate([*args, "--wafers", "2", "--faults", f"offline:fab2:{DAYS[2]}", "--quiet"]) == 0
    with luigi_settings(paths={"root": root}, **SETTINGS):
        result = luigi.build(
            [WaferYieldDaily(date=d) for d in DAYS], local_scheduler=True, workers=2, log_level="WARNING",
            detailed_summary=True,
        )  # fmt: skip
        assert result.status == LuigiStatusCode.SUCCESS
        yield root


@pytest.fixture(scope="module")
def rendered(floor: Path) -> dict[str, Any]:
    started = time.perf_counter()
    written = dashboard.render(floor, days=30, out=floor / "dashboard")
    return {"files": written, "seconds": time.perf_counter() - started, "page": written[-1].read_text()}


def test_every_chart_is_a_real_png_embedded_in_the_page(rendered: dict[str, Any]) -> None:
    files = rendered["files"]
    assert [p.name for p in files] == [f"{name}.png" for name in CHARTS] + ["index.html"]
    embedded = embedded_pngs(rendered["page"])
    for png in files[:-1]:
        assert_real_png(png)
        assert embedded[png.stem] == png.read_bytes()
    # self-contained: nothing fetched from elsewhere
    assert not re.search(r"""(src|href)=["']?(https?:|//)|<script|<link""", rendered["page"])
    assert rendered["seconds"] < 20


def test_the_page_counts_every_recorded_run(floor: Path, rendered: dict[str, Any]) -> None:
    with sqlite3.connect(floor / "history" / "runs.sqlite") as con:
        recorded = con.execute("SELECT count(*) FROM runs").fetchone()[0]
        done = con.execute("SELECT count(*) FROM runs WHERE status = 'DONE'").fetchone()[0]
    assert recorded > 30 and done == recorded
    assert f"<th>task runs</th><td>{recorded}</td>" in rendered["page"]
    assert f"<th>done</th><td>{done}</td>" in rendered["page"]
    assert "<th>success rate</th><td>100.0%</td>" in rendered["page"]


def test_data_volume_matches_what_each_ingest_read_and_wrote(floor: Path, rendered: dict[str, Any]) -> None:
    volume = data_volume(read_runs(floor / "history" / "runs.sqlite"))
    assert len(volume) == 6  # 3 days x 2 fabs
    with luigi_settings(paths={"root": floor}, **SETTINGS):
        for day, fab, mb, rows, status in volume.itertuples(index=False):
            manifest = IngestFab(fab=fab, date=day.date()).manifest()
            assert status == manifest["status"] and rows == manifest["rows"]["dies"]
            folder = landing_day(fab, day.date())
            landed = sum(f.stat().st_size for f in landed_files(folder)) if folder.exists() else 0
            assert round(mb * 1e6) == landed == sum(i["bytes"] for i in manifest.get("inputs", []))
            assert (mb > 1) == (status == "ok")
            cells = f"<td>{day:%Y-%m-%d}</td><td>{fab}</td><td>{pages.cell(mb)}</td><td>{rows}</td>"
            assert cells in rendered["page"]


def test_the_model_and_duration_figures_come_from_the_run(floor: Path) -> None:
    history = read_runs(floor / "history" / "runs.sqlite")
    with luigi_settings(paths={"root": floor}, **SETTINGS):
        lifecycle = model_auc(history)
        assert lifecycle["date"].tolist() == [pd.Timestamp(d) for d in DAYS]
        # the first day with two labelled days: version 1 validated, approved and serving that day
        assert lifecycle["champion"].tolist() == [pd.NA, pd.NA, 1]
        assert lifecycle["candidate"].tolist() == [pd.NA, pd.NA, 1]
        validation = ValidateCandidate(version=1).manifest()
        assert (
            validation["day"] == str(DAYS[2])
            and lifecycle["decision"].iloc[2] == validation["decision"] == "won"
        )
        assert lifecycle["candidate_auc"].iloc[2] == validation["candidate"]["holdout"]["auc"]
        assert np.isnan(lifecycle["champion_auc"].iloc[2])  # there was no champion to compare
        durations = workflow_durations(history)
    daily = durations[durations["workflow"] == "wafer_yield"]
    assert sorted(daily["period"]) == [str(d) for d in DAYS] and not daily["over"].any()
    assert (daily["minutes"] > 0).all() and set(daily["budget_minutes"]) == {240}


def test_main_and_the_script_render_the_same_root(floor: Path, tmp_path: Path) -> None:
    assert dashboard.main(["--root", str(floor), "--out", str(tmp_path / "main"), "--days", "7"]) == 0
    written = sorted(p.name for p in (tmp_path / "main").iterdir())
    assert written == sorted([f"{c}.png" for c in CHARTS] + ["index.html"])
    done = subprocess.run(
        [str(REPO / "scripts" / "dashboard"), "--root", str(floor), "--out", str(tmp_path / "script")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "wrote 8 charts" in done.stdout
    assert_real_png(tmp_path / "script" / "data_volume.png")
    assert (tmp_path / "script" / "index.html").read_text().count("data:image/png;base64,") == len(CHARTS)
