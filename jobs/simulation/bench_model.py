"""`scripts/bench model`: the daily yield model on a simulated floor (16 days x 3 fabs, cached in
CACHE/model-floor), trained on 14 days and scored on the 2 unseen days against the oracle AUC and
a logistic regression."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

MODEL_FLOOR = {"start": "2026-11-01", "days": 16, "fabs": "fab1,fab2,fab3", "seed": 0}
TRAIN_DAYS = 14
AUC_TARGET = 0.03  # model AUC at most this far below the oracle's on unseen days


def model_floor(cache: Path) -> tuple[Path, list[str]]:
    """The simulated floor of the model benchmark (simulated once into `cache`) and its days."""
    import datetime as dt

    root = cache / "model-floor"
    start = dt.date.fromisoformat(MODEL_FLOOR["start"])
    days = [(start + dt.timedelta(days=i)).isoformat() for i in range(MODEL_FLOOR["days"])]
    fabs = MODEL_FLOOR["fabs"].split(",")
    oracle = root / "truth" / "oracle.json"
    ready = all((root / "landing" / f / d / "_READY").exists() for f in fabs for d in days)
    if not (ready and oracle.exists() and set(days) <= set(json.loads(oracle.read_text())["days"])):
        from jobs.simulation.simulate import main as simulate

        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
            floor = [f"--{key}={value}" for key, value in MODEL_FLOOR.items()]
            simulate(["--root", str(root), *floor, "--quiet"])
    return root, days


def convert_floor(root: Path, quiet: bool) -> dict[tuple[str, str], list[Path]]:
    """Convert every landed file once (cached in root/converted/{fab}/{date}/{name}); the folders
    by (fab, landing date)."""
    from jobs.stdf import convert_stdf

    files = sorted((root / "landing").glob("*/*/*.stdf.gz"))
    folders: dict[tuple[str, str], list[Path]] = {}
    for path in tqdm(files, desc="converting", unit="file", file=sys.stderr, disable=quiet):
        fab, day = path.parent.parent.name, path.parent.name
        out = root / "converted" / fab / day / path.name.removesuffix(".stdf.gz")
        if not (out / "manifest.json").exists():
            convert_stdf(path, out)
        folders.setdefault((fab, day), []).append(out)
    return folders


def floor_tables(folders: dict[tuple[str, str], list[Path]]) -> tuple[Any, Any, dict]:
    """Features of every fab-day (with a `date` column), final-test labels, and build figures."""
    import pandas as pd

    from jobs.domain.features import fab_features, final_test_labels
    from jobs.domain.results import read_parts

    features, labels, seconds, unparsed = [], [], [], 0
    for (fab, day), paths in sorted(folders.items()):
        wafer_sort = [p for p in paths if not p.name.startswith("FT_")]
        final_test = [p for p in paths if p.name.startswith("FT_")]
        if wafer_sort:
            started = time.perf_counter()
            table = fab_features(*read_parts(wafer_sort), fab=fab).to_pandas()
            seconds.append(time.perf_counter() - started)
            features.append(table.assign(date=day))
        if final_test:  # the lots of the day before
            table, bad = final_test_labels(read_parts(final_test)[0])
            labels.append(table)
            unparsed += bad
    figures = {
        "fab_days": len(seconds),
        "build_features_seconds_mean": round(sum(seconds) / len(seconds), 3),
        "build_features_seconds_max": round(max(seconds), 3),
        "ft_units_unparsed": unparsed,
    }
    return pd.concat(features, ignore_index=True), pd.concat(labels, ignore_index=True), figures


def model(args: argparse.Namespace) -> dict:
    from jobs.domain.features import join_labels
    from jobs.domain.model import ModelParams, logistic_baseline, model_features, select_tests, train_model

    with tqdm(total=5, desc="bench model", unit="step", file=sys.stderr, disable=args.quiet) as bar:
        bar.set_postfix_str("simulating")
        root, days = model_floor(Path(args.cache))
        bar.update()
        folders = convert_floor(root, args.quiet)
        bar.update()
        bar.set_postfix_str("features")
        features, labels, build = floor_tables(folders)
        data = join_labels(features, labels)
        train, unseen = data[data["date"].isin(days[:TRAIN_DAYS])], days[TRAIN_DAYS:]
        bar.update()
        bar.set_postfix_str("training")
        params = ModelParams()
        started = time.perf_counter()
        tests = select_tests(train, params.k_tests, seed=params.seed)
        selected = time.perf_counter()
        forest = train_model(train, model_features(tests), params)
        trained = time.perf_counter()
        baseline = logistic_baseline(train, model_features(tests), seed=params.seed)
        bar.update()
        bar.set_postfix_str("scoring")
        oracle = json.loads((root / "truth" / "oracle.json").read_text())["days"]
        per_day = {
            day: _day_figures(forest, baseline, data[data["date"] == day], oracle[day]) for day in unseen
        }
        bar.update()
    return {
        "benchmark": "model",
        "cpu_count": os.cpu_count(),
        "floor": MODEL_FLOOR | {"train_days": [days[0], days[TRAIN_DAYS - 1]], "test_days": unseen},
        "features": build,
        "training": {
            "rows": forest.meta["rows"],
            "positives": forest.meta["positives"],
            "select_seconds": round(selected - started, 2),
            "train_seconds": round(trained - selected, 2),
            "selected_tests": tests,
            "features": forest.features,
            "params": forest.params,
            "calibration": forest.calibration,
        },
        "test_days": per_day,
        "summary": _model_summary(per_day),
    }


def _day_figures(forest: Any, baseline: Any, rows: Any, oracle: dict) -> dict:
    from jobs.domain.model import evaluate

    figures = evaluate(forest, rows)
    logistic = evaluate(baseline, rows)
    return {
        "auc": round(figures["auc"], 4),
        "oracle_auc": oracle["auc"],
        "oracle_minus_auc": round(oracle["auc"] - figures["auc"], 4),
        "logistic_auc": round(logistic["auc"], 4),
        "accuracy": round(figures["accuracy"], 4),
        "brier": round(figures["brier"], 4),
        "brier_of_base_rate": round(figures["positive_rate"] * (1 - figures["positive_rate"]), 4),
        "mean_p_fail": round(figures["mean_p_fail"], 4),
        "positive_rate": round(figures["positive_rate"], 4),
        "wafer_yield_mae": round(figures["wafer_yield_mae"], 4),
        "rows": figures["rows"],
        "positives": figures["positives"],
        "truth_dies": oracle["dies"],
    }


def _model_summary(per_day: dict[str, dict]) -> dict:
    gaps = [d["oracle_minus_auc"] for d in per_day.values()]
    return {
        "worst_oracle_minus_auc": max(gaps),
        "auc_within_target_of_oracle": all(g <= AUC_TARGET for g in gaps),
        "beats_logistic": all(d["auc"] > d["logistic_auc"] for d in per_day.values()),
        "accuracy_at_least_0_90": all(d["accuracy"] >= 0.90 for d in per_day.values()),
        "goals": f"AUC within {AUC_TARGET} of the oracle on unseen days and above the logistic regression",
    }
