"""The simulator's process-shift fault: final-test failure follows another mechanism from the
fault's wafer-sort days on, so a yield model trained before the shift loses its AUC after it and
one trained after it recovers; wafer sort itself, and the days before, are unchanged."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from jobs.domain import model as ym
from jobs.domain.features import join_labels
from jobs.simulation.bench_model import convert_floor, floor_tables
from jobs.simulation.faults import FAULT_GRAMMAR, SHIFT_STRENGTH, parse_faults
from jobs.simulation.simulate import _faults_help, main

DAYS = [f"2026-11-{d}" for d in range(16, 22)]  # 3 days before the shift, 3 from it on
SHIFTED = DAYS[3]
FLOOR = ["--start", DAYS[0], "--days", "6", "--lots", "1", "--wafers", "3", "--quiet"]
SHIFT = ",".join(f"shift:{fab}:{SHIFTED}..2026-11-30" for fab in ("fab1", "fab2", "fab3"))
PARAMS = ym.ModelParams(n_estimators=50, max_samples=8000, n_jobs=1)


def test_shift_fault_grammar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    faults = parse_faults("shift:fab1:2026-11-19..2026-11-30,shift:fab2:2026-11-19:0.4")
    assert [(f.kind, f.fab, f.first, f.last, f.param) for f in faults] == [
        ("shift", "fab1", dt.date(2026, 11, 19), dt.date(2026, 11, 30), None),
        ("shift", "fab2", dt.date(2026, 11, 19), dt.date(2026, 11, 19), 0.4),
    ]
    assert SHIFT_STRENGTH == 1.0 and "shift" in FAULT_GRAMMAR and "\n  shift " in _faults_help()
    for bad, message in [
        ("shift:fab1:2026-11-19:0", "above 0 and at most 1"),
        ("shift:fab1:2026-11-19:1.5", "above 0 and at most 1"),
        ("shift:fab1:2026-11-19:-0.5", "above 0 and at most 1"),
        ("shift:fab1:2026-11-19:nan", "above 0 and at most 1"),
        ("shift:fab1:2026-11-19:strong", "not a number"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_faults(bad)
    with pytest.raises(SystemExit) as exit_info:
        main(["--root", str(tmp_path), *FLOOR, "--faults", "shift:fab1:2026-11-19:2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "parameter '2' must be a strength above 0 and at most 1" in err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def shifted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shifted")
    assert main(["--root", str(root), *FLOOR, "--faults", SHIFT]) == 0
    return root


@pytest.fixture(scope="module")
def floor_data(shifted: Path) -> pd.DataFrame:
    """Features of every wafer-sort day with their final-test labels, as the workflow builds them."""
    features, labels, _ = floor_tables(convert_floor(shifted, quiet=True))
    return join_labels(features, labels)


def test_model_trained_before_the_shift_fails_after_it(floor_data: pd.DataFrame) -> None:
    def trained(days: list[str]) -> ym.YieldModel:
        train = floor_data[floor_data["date"].isin(days)]
        return ym.train_model(train, ym.model_features(ym.select_tests(train, PARAMS.k_tests)), PARAMS)

    def scored(model: ym.YieldModel, days: list[str]) -> dict:
        return ym.evaluate(model, floor_data[floor_data["date"].isin(days)])

    before = trained(DAYS[:2])
    holdout, after = scored(before, DAYS[2:3]), scored(before, DAYS[3:])
    assert holdout["auc"] > 0.8 and holdout["accuracy"] > 0.92
    assert after["auc"] <= holdout["auc"] - 0.15  # a model of the old mechanism ranks at chance
    assert after["accuracy"] <= holdout["accuracy"] - 0.04  # more dies fail, and it misses them
    assert after["positive_rate"] > 1.5 * holdout["positive_rate"]
    retrained = scored(trained(DAYS[3:5]), DAYS[5:])
    assert retrained["auc"] >= holdout["auc"] - 0.05 and retrained["accuracy"] > 0.9


def test_shift_changes_final_test_from_its_wafer_sort_days_only(shifted: Path, tmp_path: Path) -> None:
    """The day before the shift and its first day, simulated without it (a day's data does not
    depend on the other days): every wafer-sort file is the same, and so are the final-test files
    and truth of the dies sorted before the shift, although their FT lands on the shift's day."""
    assert main(["--root", str(tmp_path), "--start", DAYS[2], "--days", "2", *FLOOR[4:]]) == 0
    clean = sorted(p.relative_to(tmp_path) for p in (tmp_path / "landing").rglob("*.stdf.gz"))
    changed = [
        name.as_posix() for name in clean if (shifted / name).read_bytes() != (tmp_path / name).read_bytes()
    ]
    next_day = (dt.date.fromisoformat(SHIFTED) + dt.timedelta(days=1)).isoformat()
    assert changed and all(name.split("/")[2] == next_day and "/FT_" in name for name in changed)
    assert len(changed) == 3  # every fab's FT lot of the shift's first day
    for fab in ("fab1", "fab2", "fab3"):
        for day, same in ((DAYS[2], True), (SHIFTED, False)):
            truth = f"truth/{fab}/{day}.parquet"
            assert ((shifted / truth).read_bytes() == (tmp_path / truth).read_bytes()) is same, truth


def test_shift_is_recorded_and_the_oracle_follows_it(shifted: Path) -> None:
    entries = [
        e for e in json.loads((shifted / "truth/faults.json").read_text())["faults"] if e["kind"] == "shift"
    ]
    assert sorted((e["fab"], e["date"]) for e in entries) == sorted(
        (fab, day) for fab in ("fab1", "fab2", "fab3") for day in DAYS[3:]
    )
    oracle = json.loads((shifted / "truth/oracle.json").read_text())["days"]
    for e in entries:
        truth = pd.read_parquet(shifted / e["file"])
        assert e["file"] == f"truth/{e['fab']}/{e['date']}.parquet" and e["strength"] == 1.0
        assert (e["dies"], e["ft_failed"]) == (len(truth), int(truth.ft_failed.sum()))
        assert e["mean_p_fail_true"] == pytest.approx(truth.p_fail_true.mean(), abs=1e-6)
        next_day = (dt.date.fromisoformat(e["date"]) + dt.timedelta(days=1)).isoformat()
        assert e["files"] == [
            f"landing/{e['fab']}/{next_day}/FT_{lot}.stdf.gz" for lot in truth.lot_id.unique()
        ]
    for day in DAYS[3:]:
        truth = pd.concat(
            pd.read_parquet(shifted / f"truth/{fab}/{day}.parquet") for fab in ("fab1", "fab2", "fab3")
        )
        assert oracle[day]["auc"] == pytest.approx(
            roc_auc_score(truth.ft_failed, truth.p_fail_true), abs=1e-4
        )
        assert oracle[day]["auc"] > 0.85  # the shifted mechanism is as learnable as the old one
    readme = (shifted / "truth/README.md").read_text()
    assert "follow the shifted mechanism" in readme and f"{DAYS[3]} fab1: shift (strength 1)" in readme
