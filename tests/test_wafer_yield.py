"""The wafer-yield workflow under Luigi on a small simulated week (2 fabs, 2 wafers a fab-day).

The week has a corrupted file (fab1, day 3), a file resent under another name (fab2, day 2) and
fab2 offline on day 5. It is first run with a gap (days 3 and 4 not requested), then backfilled
with RangeDaily; the tests after that check reruns, version bumps and decisions on that floor.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import luigi
import pandas as pd
import pytest
from luigi.execution_summary import LuigiStatusCode
from luigi.task_register import Register
from luigi.tools.range import RangeDaily

from jobs.domain import registry
from jobs.files import read_json
from jobs.ops.alerts import read_alerts
from jobs.pipeline.lookback import RangeOutsideLookBack
from jobs.pipeline.stages import stage_dir
from jobs.simulation.simulate import main as simulate
from jobs.wafer_yield import (
    Deploy,
    FabDayLanded,
    Features,
    IngestFab,
    Lifecycle,
    QualityGate,
    Score,
    Train,
    ValidateCandidate,
    WaferYieldDaily,
    YieldReport,
    landing_day,
    store,
)
from tests.helpers import luigi_settings

FIRST = dt.date(2026, 11, 10)
DAYS = [FIRST + dt.timedelta(days=i) for i in range(7)]
GAP = DAYS[2:4]
SETTINGS = {"wafer_yield": {"fabs": "fab1,fab2", "min_devices": 1000}, "models": {"auto_approve": True}}


def run(*tasks: luigi.Task, workers: int = 2) -> LuigiStatusCode:
    result = luigi.build(
        list(tasks), local_scheduler=True, workers=workers, log_level="WARNING", detailed_summary=True
    )
    return result.status


def build(*tasks: luigi.Task, workers: int = 2) -> bool:
    """Whether every task ran or was complete (luigi.build alone says True when inputs are missing)."""
    return run(*tasks, workers=workers) in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY)


def week_range() -> RangeDaily:
    """A fresh RangeDaily, as each command line makes (luigi caches instances with their
    requirements; a cached one would not see what changed since)."""
    Register.clear_instance_cache()
    return RangeDaily(
        of=WaferYieldDaily, param_name="date", start=DAYS[0], stop=DAYS[-1] + dt.timedelta(days=1)
    )


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("manifest.json")}


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("floor")
    faults = f"corrupted:fab1:{DAYS[2]},duplicated:fab2:{DAYS[1]},offline:fab2:{DAYS[4]}"
    args = ["--root", str(root), "--start", str(FIRST), "--days", "7", "--fabs", "fab1,fab2"]
    assert simulate([*args, "--lots", "1", "--wafers", "2", "--faults", faults, "--quiet"]) == 0
    with luigi_settings(paths={"root": root}, **SETTINGS):
        assert build(*(WaferYieldDaily(date=d) for d in DAYS if d not in GAP))
        yield root


def summary(day: dt.date) -> dict:
    return read_json(Path(WaferYieldDaily(date=day).output().path))


def test_the_week_decides_every_day(week: Path) -> None:
    decisions = {d: Deploy(date=d).manifest() for d in DAYS}
    assert decisions[DAYS[0]]["decision"] == "skipped: insufficient data (0 labelled days < 2)"
    assert decisions[DAYS[1]]["decision"] == "skipped: insufficient data (1 labelled days < 2)"
    # the first model (trained on day 1, held out day 2) is version 1; one version a day after it
    assert [decisions[d]["version"] for d in DAYS[2:]] == [1, 2, 3, 4, 5]
    assert {decisions[d]["decision"] for d in DAYS[2:]} <= {"won", "lost"}
    for day in DAYS[2:]:
        trained = Train(date=day).manifest()
        assert trained["status"] == "trained" and trained["holdout_day"] < str(day)
        assert all(d < trained["holdout_day"] for d in trained["train_days"])
    plans = {d: Lifecycle(date=d).manifest() for d in DAYS}
    assert plans[DAYS[1]]["champion"] is None and plans[DAYS[2]]["champion"] == 1  # auto-approved: serves
    with luigi_settings(paths={"root": week}, **SETTINGS):
        assert registry.aliases(store()).get("champion") == plans[DAYS[-1]]["champion"]
        first = registry.version(store(), 1)
        assert first["tags"]["trained_for"] == str(DAYS[2]) and first["tags"]["approved_by"] == "auto_approve"
        run = store().client().get_run(first["run_id"]).data  # MLflow's run: params and metrics
        assert run.params["n_estimators"] and 0.6 < run.metrics["holdout_auc"] <= 1
        validation = read_json(ValidateCandidate(version=1).folder() / "validation.json")
        assert 0.6 < validation["candidate"]["holdout"]["auc"] <= 1 and validation["holdout_day"] == str(
            DAYS[1]
        )
    # scoring: from the first day with a champion on, each row says which version served it
    for day in set(DAYS) - set(GAP):
        scored = Score(date=day).manifest()
        assert scored["status"] == ("scored" if day >= DAYS[2] else "no production model")
    predictions = pd.read_parquet(Score(date=DAYS[-1]).folder() / "predictions.parquet")
    plan = plans[DAYS[-1]]
    assert set(predictions["model_version"]) <= {plan["champion"], plan["challenger"]}
    assert (predictions["champion_version"] == plan["champion"]).all()
    if plan["challenger"] is not None:  # shadow-scored: the challenger's p_fail beside the champion's
        assert predictions["p_fail_challenger"].notna().all()


def test_offline_fab_is_recorded_alerted_and_the_day_goes_on(week: Path) -> None:
    offline = DAYS[4]
    assert IngestFab(fab="fab2", date=offline).manifest()["status"] == "offline"
    assert Features(date=offline).manifest()["fabs"] == ["fab1"]
    day = summary(offline)
    assert day["offline_fabs"] == ["fab2"] and day["fabs"] == ["fab1"] and day["dies"] > 0
    assert any("fab2 offline on" in a["message"] for a in read_alerts(week / "alerts" / "alerts.jsonl"))


def test_unreadable_file_is_quarantined_with_its_reason(week: Path) -> None:
    faults = json.loads((week / "truth" / "faults.json").read_text())["faults"]
    corrupted = next(Path(f["file"]).name for f in faults if f["kind"] == "corrupted")
    held = week / "quarantine" / "wafer_yield" / "fab1" / str(DAYS[2])
    assert (held / corrupted).exists() and not (landing_day("fab1", DAYS[2]) / corrupted).exists()
    reason = json.loads((held / f"{corrupted}.reason.json").read_text())
    assert reason["check"] == "unreadable" and corrupted in reason["error"] and reason["byte_offset"] > 0
    ingest = IngestFab(fab="fab1", date=DAYS[2]).manifest()
    assert [q["file"] for q in ingest["quarantined"]] == [corrupted]
    assert ingest["rows"]["dies"] > 1000  # the day's other wafer is still there


def test_a_resent_file_is_read_once(week: Path) -> None:
    ingest = IngestFab(fab="fab2", date=DAYS[1]).manifest()
    assert len(ingest["duplicate_files"]) == 1 and ingest["duplicate_files"][0]["file"].endswith(
        ".resent.stdf.gz"
    )
    gate = read_json(QualityGate(date=DAYS[1]).folder() / "report.json")
    assert gate["passed"] and "fab2: files" in gate["warnings"]


def test_range_daily_backfills_the_gap_and_only_the_gap(week: Path) -> None:
    with luigi_settings(paths={"root": week}, **SETTINGS):
        assert not any(WaferYieldDaily(date=d).complete() for d in GAP)
        before = mtimes(stage_dir("daily"))
        assert build(week_range())
        assert all(WaferYieldDaily(date=d).complete() for d in DAYS)
        after = mtimes(stage_dir("daily"))
        assert {k: v for k, v in after.items() if k in before} == before
        assert sorted(set(after) - set(before)) == [f"date={d}/manifest.json" for d in GAP]
        # the no-op rerun: one listing finds every day complete, nothing runs
        assert WaferYieldDaily.bulk_complete(DAYS) == DAYS
        everything = mtimes(week)
        assert build(week_range())
        assert mtimes(week) == everything


def test_a_version_bump_reruns_that_stage_and_downstream_only(week: Path) -> None:
    with luigi_settings(paths={"root": week}, **SETTINGS):
        upstream = {stage: mtimes(stage_dir(stage)) for stage in ("ingest", "features", "train", "deploy")}
        old = {stage: stage_dir(stage) for stage in ("score", "report", "daily")}
        events = registry.history(store())
        with luigi_settings(versions={"score": 3}):
            assert all(stage_dir(stage) != folder for stage, folder in old.items())
            assert not WaferYieldDaily(date=DAYS[-1]).complete()
            assert build(week_range())
            assert {stage: mtimes(stage_dir(stage)) for stage in upstream} == upstream
            assert all(Score(date=d).complete() for d in DAYS)
            assert all(YieldReport(date=d).complete() for d in DAYS)  # downstream of Score: re-rendered
            # the lifecycle is recomputed from the registry's events: the same plans, no new event
            assert registry.history(store()) == events


def test_too_few_devices_skip_training_with_an_alert(week: Path) -> None:
    with (
        luigi_settings(paths={"root": week}, versions={"train": 3}, **SETTINGS),
        luigi_settings(wafer_yield={"min_devices": 100000}),
    ):
        assert build(Deploy(date=DAYS[2]))
        decision = Deploy(date=DAYS[2]).manifest()
        assert decision["decision"].startswith("skipped: insufficient data (")
        assert decision["decision"].endswith(" < 100000 devices)") and decision["version"] is None
        alerts = read_alerts(week / "alerts" / "alerts.jsonl")
        assert any("< 100000 devices" in a["message"] for a in alerts)


def test_a_candidate_that_is_not_better_is_kept_out(week: Path) -> None:
    """Decided again into a registered model of its own: the week's registry is left alone."""
    with luigi_settings(paths={"root": week}, **SETTINGS):
        aliases, events = registry.aliases(store()), registry.history(store())
        with luigi_settings(
            models={"registered_model": "wafer_yield_MARGIN"},
            wafer_yield={"auc_margin": 1.0},
            versions={"deploy": 3},  # the days' lifecycle outputs anew, beside the week's
        ):
            assert build(Lifecycle(date=DAYS[3]))
            assert Deploy(date=DAYS[2]).manifest()["decision"] == "won"  # no champion yet
            kept = Deploy(date=DAYS[3]).manifest()
            assert kept["decision"] == "lost" and "does not beat the champion" in kept["why"]
            assert Lifecycle(date=DAYS[3]).manifest()["champion"] == 1
            assert registry.version(store(), 2)["state"] == "retired"
        assert (registry.aliases(store()), registry.history(store())) == (aliases, events)


def test_a_failed_quality_gate_stops_training(tmp_path: Path) -> None:
    day = DAYS[0]
    args = ["--root", str(tmp_path), "--start", str(day), "--days", "1", "--fabs", "fab1", "--lots", "1"]
    assert simulate([*args, "--wafers", "2", "--quiet"]) == 0
    folder = landing_day("fab1", day)
    with luigi_settings(paths={"root": tmp_path}):
        folder = landing_day("fab1", day)
        wafer = sorted(folder.glob("*_01.stdf.gz"))[0]
        # the same wafer sent again with other bytes (another gzip level): its dies twice
        (folder / "RESENT_01.stdf.gz").write_bytes(gzip.compress(gzip.decompress(wafer.read_bytes()), 1))
        with luigi_settings(wafer_yield={"fabs": "fab1", "min_devices": 100}):
            assert build(Train(date=day))
            gate = QualityGate(date=day).manifest()
            assert not gate["passed"] and gate["failed"] == ["fab1: duplicate dies"]
            assert Train(date=day).manifest()["decision"] == "skipped: quality gate"


def test_a_missing_day_waits_for_its_deadline_then_is_offline_and_reopens_on_arrival(tmp_path: Path) -> None:
    day = dt.date.today() - dt.timedelta(days=1)
    with luigi_settings(
        paths={"root": tmp_path}, wafer_yield={"fabs": "fab1", "landing_deadline_hours": 1e6}
    ):
        assert not FabDayLanded(fab="fab1", date=day).complete()
        assert run(IngestFab(fab="fab1", date=day)) == LuigiStatusCode.MISSING_EXT  # waits for the fab
        with luigi_settings(wafer_yield={"landing_deadline_hours": 0}):
            assert build(IngestFab(fab="fab1", date=day))
            assert IngestFab(fab="fab1", date=day).manifest()["status"] == "offline"
            landing_day("fab1", day).mkdir(parents=True)
            (landing_day("fab1", day) / "_READY").touch()
            assert not IngestFab(fab="fab1", date=day).complete()  # the late fab reopens its day


def test_a_range_older_than_the_look_back_says_so(tmp_path: Path) -> None:
    now = int(dt.datetime(2026, 11, 24, tzinfo=dt.UTC).timestamp())

    def days(start: dt.date) -> RangeDaily:
        stop = start + dt.timedelta(days=2)
        return RangeDaily(of=WaferYieldDaily, param_name="date", start=start, stop=stop, now=now)

    with luigi_settings(paths={"root": tmp_path}):
        old = days(dt.date(2020, 1, 1))
        outside = [t for t in old.requires() if isinstance(t, RangeOutsideLookBack)]
        assert len(outside) == 1 and outside[0].option == "days-back" and not outside[0].complete()
        assert run(old) == LuigiStatusCode.MISSING_EXT  # not "Did not run any tasks"
        assert not any(isinstance(t, RangeOutsideLookBack) for t in days(dt.date(2026, 11, 1)).requires())


def test_a_day_every_fab_missed_still_completes(week: Path) -> None:
    """After the week (production model deployed), a day no fab delivered: nothing to score."""
    day = DAYS[-1] + dt.timedelta(days=1)
    with luigi_settings(paths={"root": week}, **SETTINGS):
        assert build(WaferYieldDaily(date=day))
        summary = WaferYieldDaily(date=day).manifest()
        assert summary["offline_fabs"] == ["fab1", "fab2"]
        assert summary["scored"] == "no dies: every fab offline"
        assert Score(date=day).manifest()["rows"] == {"dies": 0, "wafers": 0}
