"""Train, Score and ValidateCandidate read only the feature-table columns they need (bench-scale
tables have ~22,000), on a small simulated floor: Train reads every test of only the rows that
rank them and trains the model the whole table gives; Score and ValidateCandidate read their
models' columns and write what they wrote before; a day without a model's column reads as the
concatenated whole tables did."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from luigi.execution_summary import LuigiStatusCode

from jobs.domain import decisions, lifecycle, registry
from jobs.domain import features as feats
from jobs.domain import model as ym
from jobs.files import read_json
from jobs.pipeline.settings import wafer_yield, yield_model_settings
from jobs.simulation.simulate import main as simulate
from jobs.wafer_yield import (
    Deploy,
    Score,
    Train,
    ValidateCandidate,
    features_path,
    labelled_days,
    plan_of,
    predictions_path,
    scratch,
    store,
)
from tests.helpers import luigi_settings

FIRST = dt.date(2026, 11, 10)
DAYS = [FIRST + dt.timedelta(days=i) for i in range(5)]
SETTINGS = {"wafer_yield": {"fabs": "fab1,fab2", "min_devices": 1000}, "models": {"auto_approve": True}}
Read = tuple[str, list[str] | None, int | None]  # (how, columns, rows) of one features.parquet read


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("columns")
    args = ["--root", str(root), "--start", str(FIRST), "--days", str(len(DAYS)), "--fabs", "fab1,fab2"]
    assert simulate([*args, "--lots", "1", "--wafers", "2", "--quiet"]) == 0
    with luigi_settings(paths={"root": root}, **SETTINGS):
        status = luigi.build(
            [Score(date=d) for d in DAYS],
            local_scheduler=True,
            workers=2,
            log_level="WARNING",
            detailed_summary=True,
        ).status
        assert status == LuigiStatusCode.SUCCESS
        yield root


def spy_reads(monkeypatch: pytest.MonkeyPatch) -> list[Read]:
    """Every read of a features.parquet from now on: pandas' (through pq.read_table) with the
    columns asked for, and feats.read_rows' with its columns and how many rows it keeps."""
    seen: list[Read] = []
    read_table, read_rows = pq.read_table, feats.read_rows

    def table(source: Any, *args: Any, columns: Any = None, **kwargs: Any) -> Any:
        if str(source).endswith("features.parquet"):
            seen.append(("table", None if columns is None else list(columns), None))
        return read_table(source, *args, columns=columns, **kwargs)

    def rows(path: Path, positions: np.ndarray, columns: Any, *args: Any, **kwargs: Any) -> pd.DataFrame:
        seen.append(("rows", list(columns), len(positions)))
        return read_rows(path, positions, columns, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", table)
    monkeypatch.setattr(feats, "read_rows", rows)
    return seen


def rerun(task: luigi.Task) -> None:
    """Run a task again in this process (where the spies are), its output removed first."""
    shutil.rmtree(task.folder())
    assert luigi.build([task], local_scheduler=True, workers=1, log_level="WARNING")
    assert task.complete()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def trained_from_whole_tables(day: dt.date, folder: Path) -> tuple[list[str], str, int]:
    """(tests, model sha256, train rows) as Train made them before it read columns: the window's
    every column, through the same pure functions."""
    window = labelled_days(Train(date=day).window(), known_by=day)
    labelled = window[window["ft_failed"].notna() & window["ws_passed"]]
    rules = decisions.TrainingRules(wafer_yield().min_devices, wafer_yield().train_window_days)
    plan = decisions.training_plan(True, [], wafer_yield().min_devices, labelled, rules)
    params = yield_model_settings().model_params()
    tests = ym.select_tests(plan["train"], params.k_tests, seed=params.seed)
    model = ym.train_model(plan["train"], ym.model_features(tests), params)
    return tests, ym.save_model(model, folder)["sha256"], len(plan["train"])


def drop_columns(path: Path, columns: list[str]) -> None:
    """The file without `columns`, rewritten in row groups of 1,000 rows (Features may write so)."""
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(columns), path, row_group_size=1000)
    assert pq.ParquetFile(path).metadata.num_row_groups > 1


@pytest.mark.parametrize(
    ("cells", "drop"),
    [(ym.SELECTION_CELLS, False), (50_000, False), (50_000, True)],
    ids=["every-row", "sampled-500", "sampled-with-a-test-missing-a-day"],
)
def test_train_reads_the_tests_of_its_ranking_rows_only_and_makes_the_same_model(
    floor: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cells: int, drop: bool
) -> None:
    monkeypatch.setattr(ym, "SELECTION_CELLS", cells)  # 50,000 cells of ~100 tests: 500 rows ranked
    copy = tmp_path / "floor"
    shutil.copytree(floor, copy, ignore=shutil.ignore_patterns("registry", "predictions", "candidates"))
    day = DAYS[-1]
    with luigi_settings(paths={"root": copy}):
        if drop:  # the top test missing from the window's first day: NaN there, as concatenating gave
            top = trained_from_whole_tables(day, tmp_path / "first")[0][0]
            drop_columns(features_path(Train(date=day).window()[0]), [top, feats.raw_column(top)])
        tests, expected, rows = trained_from_whole_tables(day, tmp_path / "whole")
        assert cells == ym.SELECTION_CELLS or rows > 500  # the sampled runs do sample
        spied = spy_reads(monkeypatch)
        rerun(Train(date=day))
        trained = Train(date=day).manifest()
    assert trained["model"]["sha256"] == expected
    assert trained["model"]["features"] == ym.model_features(tests)
    window_reads = [r for r in spied if r[0] == "table"]
    assert window_reads and all(c == [*feats.DIE_COLUMNS, *ym.model_features([])] for _, c, _ in window_reads)
    ranking = [r for r in spied if r[0] == "rows" and any(c.startswith(feats.TEST_PREFIX) for c in r[1])]
    n_tests = len(ranking[0][1])
    assert sum(n for *_, n in ranking) == min(rows, ym.SELECTION_ROWS, cells // n_tests)
    raw = [r for r in spied if r not in ranking and r[0] == "rows"]
    assert raw and all(c == [feats.raw_column(t) for t in tests] for _, c, _ in raw)
    assert sum(n for *_, n in raw) == rows


def test_score_reads_its_models_columns_only_and_writes_what_it_wrote(
    floor: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = DAYS[-1]
    outputs = [predictions_path(day), predictions_path(day).with_name("wafers.parquet")]
    before = [sha256(p) for p in outputs]
    models = Score(date=day).load_models(plan_of(day))
    wanted = lifecycle.columns_read(models.values())
    spied = spy_reads(monkeypatch)
    rerun(Score(date=day))
    assert spied == [("table", wanted, None)]
    assert wanted[: len(feats.DIE_COLUMNS)] == feats.DIE_COLUMNS and len(wanted) < 30
    assert set(wanted) >= {f for m in models.values() for f in m.features}
    assert [sha256(p) for p in outputs] == before


def test_validation_reads_the_candidates_and_champions_columns_and_decides_as_before(
    floor: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    number = Deploy(date=DAYS[-1]).manifest()["version"]
    champion = plan_of(DAYS[-2])["champion"]
    assert number and champion, "the last day's candidate is validated beside a champion"
    task = ValidateCandidate(version=number)
    before = read_json(task.folder() / "validation.json")
    models = [registry.load(store(), v, scratch()) for v in (number, champion["version"])]
    spied = spy_reads(monkeypatch)
    rerun(task)
    assert spied and set(map(str, task.replay_days())) == set(before["replay_days"])
    assert spied == [("table", lifecycle.columns_read(models), None)] * len(task.replay_days())
    assert read_json(task.folder() / "validation.json") == before


def test_a_day_without_a_model_column_reads_as_the_whole_tables_did(floor: Path, tmp_path: Path) -> None:
    model = registry.load(store(), plan_of(DAYS[-1])["champion"]["version"], scratch())
    absent = next(f for f in model.features if f.startswith(feats.RAW_PREFIX))
    full, lacking = tmp_path / "full.parquet", tmp_path / "lacking.parquet"
    shutil.copy(features_path(DAYS[-2]), full)
    shutil.copy(features_path(DAYS[-1]), lacking)
    drop_columns(lacking, [absent])
    wanted = lifecycle.columns_read([model])
    whole = pd.concat([pd.read_parquet(full), pd.read_parquet(lacking)], ignore_index=True)
    read = pd.concat([feats.read_table(full, wanted), feats.read_table(lacking, wanted)], ignore_index=True)
    pd.testing.assert_frame_equal(read, whole[wanted])  # NaN float32 where the day lacks it, as before
    empty = tmp_path / "no-dies.parquet"  # every fab offline: a file without columns
    pq.write_table(pa.table({}), empty)
    with_empty = pd.concat([feats.read_table(empty, wanted), read], ignore_index=True)
    pd.testing.assert_frame_equal(
        with_empty, pd.concat([pd.read_parquet(empty), whole], ignore_index=True)[wanted]
    )
    assert read[absent].dtype == np.float32 and read[absent].iloc[len(pd.read_parquet(full)) :].isna().all()
    alone = pd.read_parquet(lacking)  # scored alone, the column was absent: filled with the median
    assert absent not in alone
    assert np.array_equal(model.predict_proba(feats.read_table(lacking, wanted)), model.predict_proba(alone))
    rows = np.array([0, 6, 7, 8, 500, len(alone) - 1])  # across batches of 7 rows
    others = [f for f in model.features if f != absent]
    columns = [*others[:3], absent]
    kept = feats.read_rows(lacking, rows, columns, batch_size=7)
    expected = alone.iloc[rows].assign(**{absent: np.float32(np.nan)})[columns].set_axis(pd.Index(rows))
    pd.testing.assert_frame_equal(kept, expected)
