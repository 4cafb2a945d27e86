"""The daily yield model: test selection, training, calibration, metrics, wafer forecasts, model
files (sha256-checked) and the production registry. How it is trained and calibrated, and the
measurements behind those choices: jobs/domain/README.md."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.domain.features import (
    DIE_COLUMNS,
    FEATURE_KEY,
    SPATIAL_FEATURES,
    WAFER_FEATURES,
    raw_column,
    test_columns,
)
from jobs.files import read_json, write_bytes, write_json

MODEL_FILE = "model.joblib"
META_FILE = "model.json"
SELECTION_ROWS = 30_000  # rows used to rank tests: ranking is the cost, and the order is settled by then
SELECTION_CELLS = 20_000_000  # and at most this many results (80 MB float32): 1,800 rows of 11,000 tests
BLOCK_CELLS = 1_000_000  # test ranking's float64/int64 work goes a block of this many results at a time
CALIBRATION_ROWS = 100_000  # training rows whose out-of-bag scores fit the calibration
EPS = 1e-6


@dataclass(frozen=True)
class ModelParams:
    """Training settings (luigi.cfg fills them on the Luigi side). Same params + data = same model."""

    seed: int = 0
    k_tests: int = 8  # parametric tests chosen by select_tests
    n_estimators: int = 100
    max_depth: int | None = 12
    min_samples_leaf: int = 30
    # rows drawn per tree: above 1 a count (all rows when fewer), up to 1 a share, None all. It
    # sets the training time: 100 trees of 16K rows take ~8 s on 2 cores, whatever the window.
    max_samples: int | float | None = 16_000
    max_features: float | str = 0.4
    class_weight: str | None = "balanced_subsample"
    n_jobs: int = 2


# --- test selection ----------------------------------------------------------------------------------


def labelled(df: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows that count for training and metrics: a final-test label, and wafer sort passed.
    With `columns`, only those (and ft_failed) are copied: feature tables are wide."""
    mask = df["ft_failed"].notna().to_numpy() & df["ws_passed"].to_numpy(dtype=bool)
    if columns is None:
        return df[mask]
    return df.loc[mask, list(dict.fromkeys([*columns, "ft_failed"]))]


def select_tests(train: pd.DataFrame, k: int, seed: int = 0) -> list[str]:
    """The k `p_*` columns of `train` that best separate ft_failed (see rank_tests), ranked on
    the rows `selection_rows` picks."""
    columns = test_columns(train)
    return rank_tests(selection_rows(labelled(train, columns), len(columns), seed), columns, k)


def selection_rows(rows: pd.DataFrame, tests: int, seed: int = 0) -> pd.DataFrame:
    """The labelled `rows` that rank `tests` tests, in the order rank_tests takes them: all, or
    a seeded sample of SELECTION_ROWS, fewer when that many rows would hold more than
    SELECTION_CELLS results. Only the count of rows and the seed choose them, so a table without
    the `p_*` columns picks the same rows (the workflow then reads just their tests)."""
    size = max(min(SELECTION_ROWS, SELECTION_CELLS // max(tests, 1)), 1)
    return rows.sample(size, random_state=seed) if len(rows) > size else rows


def rank_tests(rows: pd.DataFrame, columns: Sequence[str], k: int) -> list[str]:
    """The k of `columns` that best separate `rows`' ft_failed, chosen greedily, each step taking
    the test whose part not explained (linearly) by the tests already chosen separates best.

    Separation is rank-based and allows for curvature: max(|AUC(r) - 0.5|, |AUC(|r|) - 0.5|) of
    the residual r, so a monotone effect of any shape counts, and |r| catches effects growing on
    both sides (a U). Taking out what the chosen tests explain (Gram-Schmidt) is what keeps the
    siblings of a chosen test (the same measurement on other pins or conditions, which follow it
    closely) from filling the list: plain univariate ranking put 12 speed-test siblings ahead of
    the leakage test that matters. Missing values count as the median.

    Memory: the residuals are one float32 matrix (a row per test), stacked from the columns and
    standardized in place; standardizing (float64) and ranking (int64 ranks) go a block of tests
    at a time, so no float64 or int64 copy of the whole matrix is made: with SELECTION_CELLS
    results the matrix is 80 MB, and each such copy would add 160 (there were three).
    """
    columns = list(columns)
    y = rows["ft_failed"].to_numpy(dtype=bool)
    if not columns or y.all() or not y.any():
        return columns[:k]
    residual = _standardized(np.stack([rows[c].to_numpy(dtype=np.float32) for c in columns]))
    chosen: list[int] = []
    for _ in range(min(k, len(columns))):
        score = _separation(y, residual)
        score[chosen] = -1.0
        best = int(np.argmax(score))
        chosen.append(best)
        direction = residual[best].copy()
        norm = float(direction @ direction)
        if norm > 0:
            along = (residual @ direction) / norm
            for block in _blocks(residual):
                residual[block] -= np.outer(along[block], direction)
    return [columns[j] for j in chosen]


def _blocks(matrix: np.ndarray) -> list[slice]:
    """Slices of `matrix`'s rows (tests) holding about BLOCK_CELLS cells each."""
    step = max(BLOCK_CELLS // max(matrix.shape[1], 1), 1)
    return [slice(start, start + step) for start in range(0, len(matrix), step)]


def _standardized(values: np.ndarray) -> np.ndarray:
    """`values` (float32, a row per test), in place: missing values set to the row's median,
    then centred and scaled (constant: all 0). Computed in float64 a C-ordered block at a time,
    whatever the layout of `values`, so the sums run in the same order (and give the same bits)
    for any table."""
    for block in _blocks(values):
        part = np.ascontiguousarray(values[block], dtype=np.float64)
        with np.errstate(all="ignore"), warnings.catch_warnings(action="ignore", category=RuntimeWarning):
            median = np.nan_to_num(np.nanmedian(part, axis=1))
        part = np.where(np.isnan(part), median[:, None], part)
        part -= part.mean(axis=1)[:, None]
        spread = part.std(axis=1)[:, None]
        values[block] = part / np.where(spread > 0, spread, np.inf)
    return values


def _separation(y: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """max(|AUC(r) - 0.5|, |AUC(|r|) - 0.5|) of every row r of `residual`, a block at a time."""
    score = np.empty(len(residual))
    for block in _blocks(residual):
        part = residual[block]
        score[block] = np.maximum(np.abs(_auc_rows(y, part) - 0.5), np.abs(_auc_rows(y, np.abs(part)) - 0.5))
    return score


def _auc_rows(y: np.ndarray, values: np.ndarray) -> np.ndarray:
    """AUC of every row of `values` against y (Mann-Whitney on ranks). Ties are ranked in
    arbitrary order, which for continuous results costs nothing and saves a second sort."""
    order = np.argsort(values, axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, len(y) + 1)[None, :], axis=1)
    positives, negatives = y.sum(), (~y).sum()
    return (ranks[:, y].sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)


def model_features(tests: Sequence[str]) -> list[str]:
    """The model's feature list: the raw values of the selected tests, then every spatial and
    wafer feature (raw, not z-scores: see jobs/domain/README.md)."""
    return [*(raw_column(t) for t in tests), *SPATIAL_FEATURES, *WAFER_FEATURES]


# --- the model ---------------------------------------------------------------------------------------


@dataclass
class YieldModel:
    """A trained model: estimator, its inputs and how missing ones are filled, its calibration."""

    estimator: Any
    features: list[str]
    impute: dict[str, float]  # training medians
    prior: float  # final-test failure rate of the training rows
    calibration: tuple[float, float] | None = None  # p = sigmoid(a * logit(score) + b); None: as is
    params: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def matrix(self, df: pd.DataFrame) -> np.ndarray:
        """The feature matrix, missing values (and absent columns) filled with training medians."""
        columns = {
            c: df[c].astype(float) if c in df else pd.Series(np.nan, index=df.index) for c in self.features
        }
        return pd.DataFrame(columns, index=df.index).fillna(self.impute).to_numpy(dtype=np.float32)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """p_fail: the probability that each row's die fails final test."""
        if len(df) == 0:
            return np.zeros(0)
        with _one_thread(self.estimator):
            score = self.estimator.predict_proba(self.matrix(df))[:, 1]
        return score if self.calibration is None else _platt(score, self.calibration)


@contextlib.contextmanager
def _one_thread(estimator: Any) -> Iterator[None]:
    """Predict with one thread: a forest's threads add up their trees' votes in the order they
    finish, so the last bits of p_fail would differ from run to run (training keeps n_jobs)."""
    jobs = getattr(estimator, "n_jobs", None)
    if jobs is not None:
        estimator.n_jobs = 1
    try:
        yield
    finally:
        if jobs is not None:
            estimator.n_jobs = jobs


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def _platt(score: np.ndarray, ab: tuple[float, float]) -> np.ndarray:
    return 1 / (1 + np.exp(-(ab[0] * _logit(score) + ab[1])))


def _training_rows(train: pd.DataFrame, features: Sequence[str]) -> tuple[pd.DataFrame, np.ndarray, dict]:
    missing = [c for c in features if c not in train]
    if missing:
        raise ValueError(f"features missing from the training table: {', '.join(missing)}")
    rows = labelled(train, [*features, *_wafer_columns(train), *(["date"] if "date" in train else [])])
    if rows.empty:
        raise ValueError("no training rows: no die with a final-test label passed wafer sort")
    y = rows["ft_failed"].to_numpy(dtype=bool)
    if y.all() or not y.any():
        raise ValueError(f"training rows are all of one class ({len(y)} rows, {int(y.sum())} failing)")
    medians = rows[list(features)].astype(float).median()
    return rows, y, {c: float(v) if pd.notna(v) else 0.0 for c, v in medians.items()}


def train_model(
    train: pd.DataFrame, features: Sequence[str], params: ModelParams | None = None, **changes: Any
) -> YieldModel:
    """A random forest on the labelled wafer-sort-passing rows, calibrated on out-of-bag scores.

    `changes` override single params: train_model(df, features, seed=3, n_estimators=100).
    """
    from sklearn.ensemble import RandomForestClassifier

    params = replace(params or ModelParams(), **changes)
    started = time.perf_counter()
    rows, y, impute = _training_rows(train, features)
    model = YieldModel(None, list(features), impute, float(y.mean()), params=asdict(params))
    x = model.matrix(rows)
    model.estimator = RandomForestClassifier(
        n_estimators=params.n_estimators,
        max_depth=params.max_depth,
        min_samples_leaf=params.min_samples_leaf,
        max_samples=_rows_per_tree(params.max_samples, len(y)),
        max_features=params.max_features,
        class_weight=params.class_weight,
        n_jobs=params.n_jobs,
        random_state=params.seed,
    ).fit(x, y)
    fitted = time.perf_counter()
    model.calibration = _oob_calibration(model.estimator, x, y, params.seed)
    model.meta = _train_meta(rows, y, started, fitted)
    return model


def _rows_per_tree(max_samples: float | None, rows: int) -> int | float | None:
    """sklearn's max_samples from ours: a count above 1 (capped at the rows), else a share."""
    if max_samples is None or max_samples <= 1:
        return max_samples
    return min(int(max_samples), rows)


def _oob_calibration(forest: Any, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float]:
    """Platt scaling of the forest's out-of-bag scores on a sample of the training rows.

    Each row's score averages the trees that did not draw it, so it is as honest as a score on
    new data; sklearn's own oob_score_ would score every row, a cost we do not need.
    """
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(y), min(len(y), CALIBRATION_ROWS), replace=False))
    position = np.full(len(y), -1)
    position[sample] = np.arange(len(sample))
    total, count = np.zeros(len(sample)), np.zeros(len(sample))
    for tree, drawn in zip(forest.estimators_, forest.estimators_samples_, strict=True):
        out = np.ones(len(sample), dtype=bool)
        inside = position[drawn]
        out[inside[inside >= 0]] = False
        total[out] += tree.predict_proba(x[sample[out]])[:, 1]
        count[out] += 1
    seen = count > 0
    score = _logit(total[seen] / count[seen])
    platt = LogisticRegression(C=1e4).fit(score[:, None], y[sample][seen])
    return float(platt.coef_[0, 0]), float(platt.intercept_[0])


def _train_meta(rows: pd.DataFrame, y: np.ndarray, started: float, fitted: float) -> dict[str, Any]:
    import sklearn

    meta: dict[str, Any] = {
        "rows": len(y),
        "positives": int(y.sum()),
        "wafers": int(rows.groupby(_wafer_columns(rows)).ngroups) if _wafer_columns(rows) else None,
        "fit_seconds": round(fitted - started, 3),
        "seconds": round(time.perf_counter() - started, 3),
        "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "sklearn": sklearn.__version__,
    }
    if "date" in rows:
        meta["dates"] = [str(rows["date"].min()), str(rows["date"].max())]
    if "fab" in rows:
        meta["fabs"] = sorted(rows["fab"].astype(str).unique().tolist())
    return meta


def logistic_baseline(train: pd.DataFrame, features: Sequence[str], seed: int = 0) -> YieldModel:
    """StandardScaler + LogisticRegression on the same rows and imputation, for comparison."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    rows, y, impute = _training_rows(train, features)
    model = YieldModel(
        None, list(features), impute, float(y.mean()), params={"kind": "logistic", "seed": seed}
    )
    model.estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    model.estimator.fit(model.matrix(rows), y)
    model.meta = _train_meta(rows, y, started, time.perf_counter())
    return model


# --- metrics -----------------------------------------------------------------------------------------


def _wafer_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in ("fab", "lot_id", "wafer_id") if c in df]


def evaluate(model: YieldModel, df: pd.DataFrame) -> dict[str, Any]:
    """Metrics on the labelled wafer-sort-passing rows of `df` (see evaluate_scores)."""
    present = [c for c in model.features if c in df]
    rows = labelled(df, [*present, *_wafer_columns(df)])
    wafers = rows[_wafer_columns(rows)]
    return evaluate_scores(rows["ft_failed"].to_numpy(dtype=bool), model.predict_proba(rows), wafers)


def evaluate_scores(y: np.ndarray, p: np.ndarray, wafers: pd.DataFrame | None = None) -> dict[str, Any]:
    """auc, accuracy (p >= 0.5 means fail), brier, mean p vs positive rate, and wafer_yield_mae:
    per wafer |mean(1 - p) - share passing final test|, averaged over wafers (rows of `wafers`
    name each row's wafer)."""
    from sklearn.metrics import roc_auc_score

    y, p = np.asarray(y, dtype=bool), np.asarray(p, dtype=float)
    out: dict[str, Any] = {"rows": len(y), "positives": int(y.sum())}
    if len(y) == 0:
        return out | {"auc": None, "accuracy": None, "brier": None, "wafer_yield_mae": None}
    out["auc"] = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None
    out["accuracy"] = float(((p >= 0.5) == y).mean())
    out["brier"] = float(((p - y) ** 2).mean())
    out["positive_rate"] = float(y.mean())
    out["mean_p_fail"] = float(p.mean())
    if wafers is not None and len(wafers.columns):
        per = pd.DataFrame({"good": ~y, "forecast": 1 - p}).groupby(
            [wafers[c].to_numpy() for c in wafers.columns]
        )
        out["wafer_yield_mae"] = float((per["forecast"].mean() - per["good"].mean()).abs().mean())
        out["wafers"] = int(per.ngroups)
    return out


def score_predictions(predictions: pd.DataFrame, labels: pd.DataFrame) -> dict[str, Any]:
    """Metrics of stored predictions (FEATURE_KEY + p_fail, optionally fab and ws_passed) against
    labels that arrived later (FEATURE_KEY + ft_failed): the walk-forward backtest.

    Only dies in both count (inner join); `labelled_share` is the share of predictions with a label.
    """
    scored = predictions
    if "ws_passed" in scored:
        scored = scored[scored["ws_passed"].to_numpy(dtype=bool)]
    joined = scored.merge(
        labels[[*FEATURE_KEY, "ft_failed"]], on=FEATURE_KEY, how="inner", validate="many_to_one"
    )
    joined = joined[joined["ft_failed"].notna()]
    wafers = joined[_wafer_columns(joined)]
    out = evaluate_scores(
        joined["ft_failed"].to_numpy(dtype=bool), joined["p_fail"].to_numpy(dtype=float), wafers
    )
    return out | {"labelled_share": len(joined) / len(scored) if len(scored) else None}


def backtest(predictions: dict[str, pd.DataFrame], labels: pd.DataFrame) -> dict[str, Any]:
    """How each day's stored predictions fared against the labels known now, and the mean AUC."""
    per_day = {day: score_predictions(frame, labels) for day, frame in predictions.items()}
    aucs = [m["auc"] for m in per_day.values() if m.get("auc") is not None]
    return {"days": len(per_day), "mean_auc": sum(aucs) / len(aucs) if aucs else None, "per_day": per_day}


def score_day(
    scored: pd.DataFrame, min_forecast_yield: float, extra: Sequence[str] = ()
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """(the p_fail of every wafer-sort-passing die with the `extra` columns, each wafer's
    forecast, the wafers forecast below `min_forecast_yield` as records) of a day's features
    with their p_fail."""
    wafers = wafer_forecast(scored)
    low = wafers[wafers["forecast_yield"] < min_forecast_yield]
    keep = [*DIE_COLUMNS, "p_fail", *extra]
    predictions = scored.loc[scored["ws_passed"], keep].reset_index(drop=True)
    return predictions, wafers, low[["fab", "lot_id", "wafer_id", "forecast_yield"]].to_dict("records")


def wafer_forecast(scored: pd.DataFrame) -> pd.DataFrame:
    """Per wafer (fab, lot_id, wafer_id): dies, ws_passed dies, ws_yield, the expected final-test
    yield of the wafer-sort-good dies mean(1 - p_fail), expected good dies sum(1 - p_fail), and the
    overall forecast ws_yield x ft_yield (= expected good dies / dies; 0 when no die passed sort).

    p_fail of dies that failed wafer sort is ignored (they never reach final test).
    """
    passed = scored["ws_passed"].to_numpy(dtype=bool)
    good = np.where(passed, 1 - scored["p_fail"].to_numpy(dtype=float), 0.0)
    frame = pd.DataFrame({"passed": passed, "good": good, "ft_good": np.where(passed, good, np.nan)})
    keys = _wafer_columns(scored)
    grouped = frame.groupby([scored[c].to_numpy() for c in keys], sort=True)
    out = pd.DataFrame(
        {
            "dies": grouped.size(),
            "ws_passed_dies": grouped["passed"].sum().astype(int),
            "expected_ft_yield": grouped["ft_good"].mean(),
            "expected_good_dies": grouped["good"].sum(),
        }
    )
    out["ws_yield"] = out["ws_passed_dies"] / out["dies"]
    out["forecast_yield"] = out["expected_good_dies"] / out["dies"]
    out.index.names = keys
    columns = [
        "dies",
        "ws_passed_dies",
        "ws_yield",
        "expected_ft_yield",
        "expected_good_dies",
        "forecast_yield",
    ]
    return out[columns].reset_index()


# --- artifacts ---------------------------------------------------------------------------------------


class ModelIntegrityError(ValueError):
    """A model file whose content is not what its model.json recorded."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(model: YieldModel, folder: Path) -> dict[str, Any]:
    """Write `folder`/model.joblib and model.json (features, params, metadata, the joblib's sha256).

    The joblib holds what predicts, not when or how fast it was trained: `meta` (timings, the
    training time) goes to model.json only, so the same data and settings give the same bytes
    and the sha256 names the model. Each file appears whole (jobs/files.py, flushed to disk);
    model.json comes last, so a folder with a model.json holds a complete model. Returns the
    model.json content.
    """
    import io

    import joblib

    folder = Path(folder)
    buffer = io.BytesIO()
    joblib.dump(replace(model, meta={}), buffer, compress=3)
    write_bytes(folder / MODEL_FILE, buffer.getvalue(), durable=True)
    meta = {
        "file": MODEL_FILE,
        "sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
        "bytes": len(buffer.getvalue()),
        "features": model.features,
        "impute": model.impute,
        "prior": model.prior,
        "calibration": None if model.calibration is None else list(model.calibration),
        "params": model.params,
        "meta": model.meta,
    }
    write_json(folder / META_FILE, meta, sort_keys=True, durable=True)
    return read_json(folder / META_FILE)


def load_model(folder: Path, verify: bool = True) -> YieldModel:
    """The model saved in `folder`; with `verify`, its sha256 must match model.json's."""
    import joblib

    folder = Path(folder)
    meta = read_json(folder / META_FILE)
    path = folder / meta.get("file", MODEL_FILE)
    if verify:
        actual = file_sha256(path)
        if actual != meta["sha256"]:
            raise ModelIntegrityError(
                f"{path}: sha256 {actual} does not match {meta['sha256']} recorded in {folder / META_FILE}"
            )
    model = joblib.load(path)
    if not isinstance(model, YieldModel):
        raise ModelIntegrityError(f"{path}: holds a {type(model).__name__}, not a YieldModel")
    model.meta = meta.get("meta", {})  # kept in model.json, not the joblib (see save_model)
    return model
