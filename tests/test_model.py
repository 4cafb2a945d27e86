"""The yield model (jobs/domain/model.py): selection, calibration, metrics, forecasts, artifacts and the
registry, on synthetic feature tables whose answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.domain import model as ym
from jobs.domain.features import FEATURE_KEY, SPATIAL_FEATURES, WAFER_FEATURES

SMALL = ym.ModelParams(n_estimators=30, max_samples=3000, max_depth=8, min_samples_leaf=20, n_jobs=1)


def synthetic(n: int, seed: int) -> pd.DataFrame:
    """Dies whose final-test failure depends on p_u (U-shaped), p_m (monotone) and the edge.

    p_m2 closely follows p_m without causing anything; p_noise is noise. raw_X = 10 X + 3.
    """
    rng = np.random.default_rng(seed)
    m, u = rng.normal(size=n), rng.normal(size=n)
    edge = rng.uniform(0, 20, n)
    tests = {"p_m": m, "p_m2": 0.95 * m + 0.3 * rng.normal(size=n), "p_u": u, "p_noise": rng.normal(size=n)}
    logit = -4.6 + 1.6 * m + 0.7 * u**2 + 1.5 * np.exp(-edge / 2)
    failed = rng.random(n) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "fab": "fab1",
            "lot_id": "L1",
            "wafer_id": (np.arange(n) // 500).astype(str),
            "x_coord": (np.arange(n) % 500).astype(np.int16),
            "y_coord": np.zeros(n, np.int16),
            "ws_passed": rng.random(n) < 0.95,
            **tests,
            **{"raw_" + k[2:]: 10 * v + 3 for k, v in tests.items()},
            "edge_distance": edge,
            **{c: rng.normal(size=n) for c in SPATIAL_FEATURES + WAFER_FEATURES if c != "edge_distance"},
        }
    )
    frame["ft_failed"] = pd.array(np.where(frame["ws_passed"], failed, None), dtype="boolean")
    return frame


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return synthetic(20_000, seed=1)


@pytest.fixture(scope="module")
def fresh() -> pd.DataFrame:
    return synthetic(20_000, seed=2)


@pytest.fixture(scope="module")
def forest(train: pd.DataFrame) -> ym.YieldModel:
    return ym.train_model(train, ym.model_features(["p_m", "p_u"]), SMALL)


def test_selection_takes_causes_not_their_shadows(train: pd.DataFrame) -> None:
    rows = ym.labelled(train)
    y, values = rows["ft_failed"].to_numpy(dtype=bool), rows[["p_m", "p_m2", "p_u"]].to_numpy().T
    alone = np.maximum(abs(ym._auc_rows(y, values) - 0.5), abs(ym._auc_rows(y, np.abs(values)) - 0.5))
    assert alone[0] > alone[1] > alone[2]  # ranked one by one, the shadow p_m2 would come second
    assert ym.select_tests(train, 2) == ["p_m", "p_u"]
    assert set(ym.select_tests(train, 4)) == {"p_m", "p_m2", "p_u", "p_noise"}
    assert ym.model_features(["p_m"]) == ["raw_m", *SPATIAL_FEATURES, *WAFER_FEATURES]


def test_selection_is_bounded_by_cells_and_its_blocks_change_no_bit(
    train: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    many = pd.DataFrame(index=range(50_000))
    assert len(ym.selection_rows(many, 100)) == ym.SELECTION_ROWS  # demo scale: rows bound it
    assert len(ym.selection_rows(many, 11_000)) == ym.SELECTION_CELLS // 11_000 == 1818  # bench: cells
    assert ym.selection_rows(many, 11_000, seed=3).index.equals(ym.selection_rows(many[[]], 11_000, 3).index)
    tests = ["p_m", "p_m2", "p_u", "p_noise"]
    rows = ym.labelled(train, tests)
    values = rows[tests].to_numpy(dtype=np.float32).T
    whole, chosen = ym._standardized(values.copy()), ym.select_tests(train, 4)
    assert whole.dtype == np.float32 and whole.shape == (4, len(rows))
    monkeypatch.setattr(ym, "BLOCK_CELLS", 1)  # a block per test
    assert np.array_equal(ym._standardized(values.copy()), whole)
    assert np.array_equal(ym._standardized(np.asfortranarray(values)), whole)  # any layout, same sums
    assert ym.select_tests(train, 4) == chosen


def test_training_rows_are_labelled_sort_passing_dies(train: pd.DataFrame, forest: ym.YieldModel) -> None:
    usable = train["ws_passed"] & train["ft_failed"].notna()
    assert forest.meta["rows"] == usable.sum()
    assert forest.meta["positives"] == train.loc[usable, "ft_failed"].sum()
    assert forest.prior == pytest.approx(train.loc[usable, "ft_failed"].mean())
    assert forest.impute["raw_m"] == pytest.approx(train.loc[usable, "raw_m"].median())


def test_probabilities_are_calibrated(forest: ym.YieldModel, fresh: pd.DataFrame) -> None:
    metrics = ym.evaluate(forest, fresh)
    rate = metrics["positive_rate"]
    assert 0.04 < rate < 0.1  # balanced class weights would put the mean near 0.5 uncorrected
    assert metrics["mean_p_fail"] == pytest.approx(rate, abs=0.015)
    assert metrics["brier"] < rate * (1 - rate) * 0.9  # better than predicting the base rate
    assert metrics["accuracy"] >= 0.9 and metrics["auc"] > 0.75
    assert metrics["rows"] == (fresh["ws_passed"] & fresh["ft_failed"].notna()).sum()
    assert ym.evaluate(ym.logistic_baseline(fresh, forest.features), fresh)["auc"] < metrics["auc"]  # U shape


def test_training_is_deterministic(train: pd.DataFrame, forest: ym.YieldModel) -> None:
    again = ym.train_model(train, forest.features, SMALL)
    assert np.array_equal(again.predict_proba(train.head(500)), forest.predict_proba(train.head(500)))
    assert again.calibration == forest.calibration


def test_missing_values_take_the_training_median(forest: ym.YieldModel, fresh: pd.DataFrame) -> None:
    rows = fresh.head(50).copy()
    holes = rows.assign(raw_m=np.nan).drop(columns="local_fail_share")
    filled = rows.assign(raw_m=forest.impute["raw_m"], local_fail_share=forest.impute["local_fail_share"])
    assert np.array_equal(forest.predict_proba(holes), forest.predict_proba(filled))
    assert forest.predict_proba(rows.head(0)).shape == (0,)


def test_training_refuses_one_class(train: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="one class"):
        ym.train_model(train.assign(ft_failed=pd.array([False] * len(train), dtype="boolean")), ["raw_m"])
    with pytest.raises(ValueError, match="raw_zz"):
        ym.train_model(train, ["raw_zz"])


def test_evaluate_scores_by_hand() -> None:
    y, p = np.array([True, False, False, True]), np.array([0.9, 0.2, 0.6, 0.4])
    wafers = pd.DataFrame({"lot_id": ["L", "L", "L", "L"], "wafer_id": ["a", "a", "b", "b"]})
    out = ym.evaluate_scores(y, p, wafers)
    assert out["auc"] == pytest.approx(0.75)  # 3 of 4 failing/passing pairs in order
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["brier"] == pytest.approx((0.01 + 0.04 + 0.36 + 0.36) / 4)
    assert out["wafer_yield_mae"] == pytest.approx((abs(0.45 - 0.5) + abs(0.5 - 0.5)) / 2)
    assert out["rows"] == 4 and out["positives"] == 2 and out["wafers"] == 2


def test_score_predictions_joins_later_labels() -> None:
    keys = pd.DataFrame({"lot_id": "L", "wafer_id": "01", "x_coord": np.arange(4, dtype=np.int16)})
    keys["y_coord"] = np.int16(0)
    predictions = keys.assign(fab="fab1", ws_passed=[True, True, True, False], p_fail=[0.9, 0.1, 0.2, 0.5])
    labels = keys.iloc[[0, 1, 3]].assign(ft_failed=pd.array([True, False, True], dtype="boolean"))
    out = ym.score_predictions(predictions, labels)
    assert out["rows"] == 2 and out["auc"] == 1.0  # the sort-failing die and the unlabelled one drop
    assert out["labelled_share"] == pytest.approx(2 / 3)


def test_wafer_forecast() -> None:
    scored = pd.DataFrame(
        {
            "fab": "fab1",
            "lot_id": "L",
            "wafer_id": ["01"] * 4 + ["02"] * 2,
            "ws_passed": [True, True, True, False, False, False],
            "p_fail": [0.1, 0.2, 0.3, np.nan, np.nan, 0.5],
        }
    )
    out = ym.wafer_forecast(scored).set_index("wafer_id")
    assert list(out.columns[:2]) == ["fab", "lot_id"]
    first = out.loc["01"]
    assert (first["dies"], first["ws_passed_dies"]) == (4, 3)
    assert first["ws_yield"] == 0.75 and first["expected_ft_yield"] == pytest.approx(0.8)
    assert first["expected_good_dies"] == pytest.approx(2.4)
    assert first["forecast_yield"] == pytest.approx(0.75 * 0.8)
    assert np.isnan(out.loc["02", "expected_ft_yield"]) and out.loc["02", "forecast_yield"] == 0


def test_save_and_load(tmp_path: Path, forest: ym.YieldModel, fresh: pd.DataFrame) -> None:
    meta = ym.save_model(forest, tmp_path / "m")
    assert meta == json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["sha256"] == ym.file_sha256(tmp_path / "m" / "model.joblib")
    assert meta["features"] == forest.features and meta["meta"]["rows"] == forest.meta["rows"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.joblib", "model.json"]
    loaded = ym.load_model(tmp_path / "m")
    assert np.array_equal(loaded.predict_proba(fresh.head(200)), forest.predict_proba(fresh.head(200)))


def test_load_refuses_a_changed_model_file(tmp_path: Path, forest: ym.YieldModel) -> None:
    ym.save_model(forest, tmp_path / "m")
    path = tmp_path / "m" / "model.joblib"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ym.ModelIntegrityError, match=r"model\.joblib: sha256 .* does not match"):
        ym.load_model(tmp_path / "m")


def test_the_same_data_and_settings_give_the_same_model_bytes(tmp_path: Path, train: pd.DataFrame) -> None:
    features = ym.model_features(["p_m", "p_u"])
    saved = [ym.save_model(ym.train_model(train, features, SMALL), tmp_path / name) for name in "ab"]
    assert saved[0]["sha256"] == saved[1]["sha256"] == ym.file_sha256(tmp_path / "b" / "model.joblib")
    assert (tmp_path / "a" / "model.joblib").read_bytes() == (tmp_path / "b" / "model.joblib").read_bytes()
    # when and how fast it was trained is kept beside the model, in model.json
    assert {"trained_at", "seconds", "fit_seconds"} <= set(saved[1]["meta"])
    assert ym.load_model(tmp_path / "b").meta == saved[1]["meta"]
    other = ym.save_model(ym.train_model(train, features, SMALL, seed=1), tmp_path / "c")
    assert other["sha256"] != saved[0]["sha256"]  # the sha256 does tell models apart


def test_model_features_keep_the_join_key(forest: ym.YieldModel) -> None:
    assert not set(FEATURE_KEY) & set(forest.features)  # identifiers never leak into the model
