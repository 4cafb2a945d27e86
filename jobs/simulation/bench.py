"""Benchmarks behind scripts/bench; each prints its figures as JSON on stdout.

    scripts/bench ingest     STDF reading: our arrow and pystdf engines against stdf-convert's raw
                             streaming parse, on lot2, lot3 and simulated bench-scale wafer files
    scripts/bench model      the daily yield model on a simulated floor (16 days x 3 fabs, cached in
                             CACHE/model-floor): trained on 14 days, scored on the 2 unseen days
                             against the oracle AUC and a logistic regression
    scripts/bench pipeline   the wafer-yield workflow: a demo-scale day (3 fabs) from landing zone
                             to predictions after a week of history, and the no-op RangeDaily
                             over 30 complete days
    scripts/bench merge      the fab merge: hours merged per minute with 1 and 2 workers, and the
                             no-op RangeHourly over 90 days of hours
    scripts/bench quality    the quality monitor: files and MB checked per second in a window of
                             200 demo-scale files
    scripts/bench report     the daily yield report (YieldReport) of a demo-scale day (3 fabs, 3
                             days simulated so the last is scored), and its time per wafer drawn

Every figure is measured in the same run as its reference, in separate processes (so peak RSS
is each one's own), and reported with the ratio: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from jobs.files import json_text

REPO = Path(__file__).resolve().parents[2]
SHARED_STDF = REPO.parent / "shared" / "stdf"

RAW_PARSE = """
import sys, time, stdf_convert
start = time.perf_counter()
records = 0
for _, batch in stdf_convert.batches(sys.argv[1]):
    records += batch.num_rows
print(time.perf_counter() - start, records)
"""

# Runs a command's module and reports its peak RSS (VmHWM) on exit. ru_maxrss from wait4 would
# not do: Linux carries the high-water mark across fork and exec, so every child would report
# at least this benchmark's own peak.
PEAK_RSS = """
import atexit, runpy, sys
def report():
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    print(f"peak-rss-kb {kb}", file=sys.stderr)
atexit.register(report)
if sys.argv[1] == "-c":
    sys.argv = sys.argv[2:]
    exec(compile(sys.argv[0], "<bench>", "exec"), {"__name__": "__main__"})
else:
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _run_measured(command: list[str]) -> tuple[float, float, str]:
    """Run `python -m MODULE ARGS` or `python -c CODE ARGS`; return wall seconds, peak RSS (MB), stdout."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    kb = int(done.stderr.rsplit("peak-rss-kb", 1)[1].split()[0])
    return seconds, kb / 1024, done.stdout


def _stream_bytes(path: Path) -> int:
    from jobs.stdf.source import open_stream

    total = 0
    with open_stream(path) as stream:
        while data := stream.read(1 << 24):
            total += len(data)
    return total


def measure_file(path: Path, engines: list[str], workdir: Path) -> dict:
    """Raw stdf-convert parse vs our engines (whole `python -m jobs.stdf convert` command)."""
    mb = _stream_bytes(path) / 1e6
    figures: dict = {"file": path.name, "bytes_on_disk": path.stat().st_size, "stream_mb": round(mb, 1)}
    wall, rss, out = _run_measured(["-c", RAW_PARSE, str(path)])
    parse_seconds = float(out.split()[0])
    figures["stdf_convert_raw"] = {
        "seconds": round(parse_seconds, 3),
        "mb_per_s": round(mb / parse_seconds, 1),
        "peak_rss_mb": round(rss),
        "records": int(out.split()[1]),
    }
    for engine in engines:
        outdir = workdir / f"{path.name}.{engine}"
        command = [
            "jobs.stdf",
            "convert",
            str(path),
            str(outdir),
            "--quiet",
            "--batch-size",
            "0",
            "--compression",
            "zstd",
        ]
        wall, rss, _ = _run_measured([*command, "--engine", engine])
        manifest = json.loads((outdir / "manifest.json").read_text())
        figures[engine] = {
            "seconds_whole_command": round(wall, 3),
            "seconds_in_process": manifest["seconds"],
            "mb_per_s": round(mb / wall, 1),
            "peak_rss_mb": round(rss),
            "parts": manifest["rows"]["parts"],
            "results": manifest["rows"]["results"],
        }
        shutil.rmtree(outdir)
    arrow = figures.get("arrow", {}).get("seconds_whole_command")
    if arrow:
        figures["arrow_vs_raw_parse"] = round(parse_seconds / arrow, 2)
        if "pystdf" in figures:
            figures["arrow_vs_pystdf"] = round(figures["pystdf"]["seconds_whole_command"] / arrow, 1)
    return figures


def bench_wafer(cache: Path) -> Path:
    """One bench-scale simulated wafer file (about 100 MB), simulated once into `cache`."""
    found = sorted((cache / "landing").glob("fab1/*/*.stdf.gz")) if cache.exists() else []
    if not found:
        from jobs.simulation.simulate import main as simulate

        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
            simulate(["--root", str(cache), "--start", "2026-11-02", "--days", "1", "--fabs", "fab1",
                      "--scale", "bench", "--lots", "1", "--wafers", "1", "--quiet"])  # fmt: skip
        found = sorted((cache / "landing").glob("fab1/*/*.stdf.gz"))
    return next(f for f in found if not f.name.startswith("FT_"))


def resized_wafer(source: Path, factor: float, target: Path) -> Path:
    """A valid STDF file whose part records are those of `source` taken `factor` times.

    factor 4 repeats the parts section four times (a bigger wafer); factor 1/8 keeps the first
    eighth of it, cut just before a touchdown's first PIR so that no part is left open.
    """
    if target.exists():
        return target
    import stdf_convert

    marks = stdf_convert.tables(source, ["PIR", "PRR"])
    pir_offsets = marks["PIR"]["byte_offset"].to_numpy()
    first = int(pir_offsets[0])
    last = marks["PRR"]["byte_offset"][-1].as_py() + 4 + marks["PRR"]["rec_len"][-1].as_py()
    data = gzip.decompress(source.read_bytes())
    if factor < 1:
        prr_end = marks["PRR"]["byte_offset"][int(len(marks["PRR"]) * factor)].as_py()
        last = int(pir_offsets[pir_offsets > prr_end][0])
    temporary = target.with_suffix(".tmp")
    with gzip.open(temporary, "wb", compresslevel=1) as out:
        out.write(data[:first])
        for _ in range(max(1, int(factor))):
            out.write(data[first:last])
        out.write(data[last:] if factor >= 1 else b"")
    temporary.rename(target)
    return target


def ingest(args: argparse.Namespace) -> dict:
    cache = Path(args.cache)
    with tqdm(total=6, desc="bench ingest", unit="step", file=sys.stderr, disable=args.quiet) as bar:
        bar.set_postfix_str("simulating the bench wafer")
        wafer = bench_wafer(cache)
        eighth = resized_wafer(wafer, 1 / 8, cache / "bench_wafer_eighth.stdf.gz")
        big = resized_wafer(wafer, 4, cache / "bench_wafer_x4.stdf.gz")
        bar.update()
        files = [(SHARED_STDF / name, ["arrow", "pystdf"]) for name in ("lot2.stdf.gz", "lot3.stdf.gz")]
        files = [f for f in files if f[0].exists()]
        # pystdf would need many minutes for the whole bench wafer: it reads an eighth of it
        files += [(eighth, ["arrow", "pystdf"]), (wafer, ["arrow"]), (big, ["arrow"])]
        results = []
        with tempfile.TemporaryDirectory(prefix="bench-") as work:
            for path, engines in files:
                bar.set_postfix_str(path.name)
                results.append(measure_file(path, engines, Path(work)))
                bar.update()
    by_name = {r["file"]: r for r in results}
    one, four, part = by_name[wafer.name], by_name[big.name], by_name[eighth.name]
    return {
        "benchmark": "ingest",
        "cpu_count": os.cpu_count(),
        "files": results,
        "summary": {
            "arrow_vs_raw_parse_bench_wafer": one["arrow_vs_raw_parse"],
            "arrow_vs_raw_parse_4x_wafer": four["arrow_vs_raw_parse"],
            "arrow_mb_per_s_4x_wafer": four["arrow"]["mb_per_s"],
            "arrow_vs_pystdf_eighth_wafer": part["arrow_vs_pystdf"],
            "arrow_4x_wafer_mb_per_s_vs_pystdf_eighth": round(
                four["arrow"]["mb_per_s"] / part["pystdf"]["mb_per_s"], 1
            ),
            "peak_rss_mb_bench_wafer": one["arrow"]["peak_rss_mb"],
            "peak_rss_mb_4x_wafer": four["arrow"]["peak_rss_mb"],
            "rss_growth_1x_to_4x": round(four["arrow"]["peak_rss_mb"] / one["arrow"]["peak_rss_mb"], 2),
            "goals": "arrow >= 0.8x raw parse and >= 25x pystdf; peak RSS flat from the 1x to the 4x wafer",
        },
    }


# --- the yield model -------------------------------------------------------------------------------

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

    from jobs.domain.features import build_features, combine_conversions, final_test_labels

    features, labels, seconds, unparsed = [], [], [], 0
    for (fab, day), paths in sorted(folders.items()):
        wafer_sort = [p for p in paths if not p.name.startswith("FT_")]
        final_test = [p for p in paths if p.name.startswith("FT_")]
        if wafer_sort:
            started = time.perf_counter()
            table = build_features(*combine_conversions(wafer_sort), fab=fab)
            seconds.append(time.perf_counter() - started)
            features.append(table.assign(date=day))
        if final_test:  # the lots of the day before
            table, bad = final_test_labels(combine_conversions(final_test)[0])
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


PIPELINE_START = "2026-11-01"


def _luigi_range(
    root: Path, start: str, stop: str, workers: int, of: str = "WaferYieldDaily", extra: tuple[str, ...] = ()
) -> tuple[float, subprocess.CompletedProcess]:
    """`luigi ... RangeDaily --of WaferYieldDaily` (or RangeHourly --of FabMergeHourly) as a user
    types it; wall seconds and the finished process."""
    daily = of == "WaferYieldDaily"
    module, range_task = ("jobs.wafer_yield", "RangeDaily") if daily else ("jobs.fab_merge", "RangeHourly")
    command = [
        sys.executable, "-m", "luigi", "--module", module,
        range_task, "--of", of, "--start", start, "--stop", stop,
        "--local-scheduler", "--workers", str(workers), "--paths-root", str(root), "--log-level", "WARNING",
        *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"scripts/bench: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started, done


def _simulate(root: Path, days: int, *extra: str, start: str = PIPELINE_START) -> None:
    from jobs.simulation.simulate import main as simulate

    shutil.rmtree(root, ignore_errors=True)
    simulate(["--root", str(root), "--start", start, "--days", str(days), "--quiet", *extra])


def _stage_seconds(root: Path, day: str) -> dict[str, float]:
    """Seconds each stage of one day took, from its manifests (conversions: summed over files)."""
    seconds: dict[str, float] = {}
    for manifest in root.glob(f"*/v*/date={day}/**/manifest.json"):
        stage = manifest.relative_to(root).parts[0]
        seconds[stage] = seconds.get(stage, 0.0) + json.loads(manifest.read_text())["seconds"]
    ingested = [json.loads(m.read_text()) for m in root.glob(f"ingest/v*/date={day}/*/manifest.json")]
    shas = {f["sha256"] for m in ingested for f in m.get("files", [])}
    seconds["converted (sum over files)"] = sum(
        json.loads(m.read_text())["seconds"]
        for sha in shas
        for m in root.glob(f"converted/v*/{sha}/manifest.json")
    )
    return {k: round(v, 2) for k, v in sorted(seconds.items())}


def pipeline(args: argparse.Namespace) -> dict:
    """A demo-scale day (3 fabs, ~30K dies) from the landing zone to predictions, after a week of
    history so that it trains, validates and deploys; and the no-op RangeDaily over 30 done days."""
    import datetime as dt

    cache = Path(args.cache) / "pipeline"
    week_root, month_root = cache / "week", cache / "month"
    first = dt.date.fromisoformat(PIPELINE_START)
    day = lambda n: f"{first + dt.timedelta(days=n)}"  # noqa: E731

    _simulate(week_root, 8)
    week_seconds, _ = _luigi_range(week_root, day(0), day(7), workers=2)
    day_seconds, _ = _luigi_range(week_root, day(7), day(8), workers=2)
    summary = json.loads(
        next(week_root.glob(f"wafer_yield_daily/v*/date={day(7)}/manifest.json")).read_text()
    )

    month = ("2026-10-01", "2026-10-31")  # 30 days, all past their landing deadlines
    _simulate(month_root, 30, "--fabs", "fab1", "--lots", "1", "--wafers", "1", start=month[0])
    one_fab = ("--wafer-yield-fabs", "fab1")
    _luigi_range(month_root, *month, workers=2, extra=one_fab)
    noop_seconds, _ = _luigi_range(month_root, *month, workers=1, extra=one_fab)
    return {
        "day": {
            "date": day(7),
            "dies": summary["dies"],
            "decision": summary["decision"],
            "seconds": round(day_seconds, 1),
            "goal_seconds": 60,
            "ratio_to_goal": round(day_seconds / 60, 2),
            "stage_seconds": _stage_seconds(week_root, day(7)),
        },
        "week_before_seconds": round(week_seconds, 1),
        "noop_range_30_days": {
            "seconds": round(noop_seconds, 2),
            "goal_seconds": 5,
            "ratio_to_goal": round(noop_seconds / 5, 2),
            "note": "whole luigi command, start-up included; a 1-fab floor (the check reads manifests only)",
        },
        "workers": 2,
    }


MERGE_STAGES = ("fab_hour", "reference", "normalize", "feature_store", "fab_merge_hourly")


def merge(args: argparse.Namespace) -> dict:
    """Hours per minute merged at demo scale (3 fabs) with 1 and 2 workers, from conversions that
    exist (every workflow shares them), and the no-op RangeHourly check over 90 days of hours."""
    import datetime as dt

    root = Path(args.cache) / "merge"
    first = dt.date.fromisoformat(PIPELINE_START)
    start, stop = f"{first + dt.timedelta(days=1)}T00", f"{first + dt.timedelta(days=2)}T00"
    _simulate(root, 2)
    converted, _ = _luigi_range(root, start, stop, 2, "FabMergeHourly")  # also converts the files
    rates = {}
    for workers in (1, 2):
        for stage in MERGE_STAGES:
            shutil.rmtree(root / stage, ignore_errors=True)
        seconds, _ = _luigi_range(root, start, stop, workers, "FabMergeHourly")
        rates[f"workers_{workers}"] = {
            "seconds_24_hours": round(seconds, 1),
            "hours_per_minute": round(1440 / seconds, 1),
        }
    return {
        "benchmark": "merge",
        "cpu_count": os.cpu_count(),
        "floor": "3 fabs at demo scale (30K dies a day): the second day merged, the first its reference",
        "first_run_with_conversions_seconds": round(converted, 1),
        "merge": rates,
        "speedup_2_vs_1_worker": round(
            rates["workers_2"]["hours_per_minute"] / rates["workers_1"]["hours_per_minute"], 2
        ),
        "noop_range_90_days": _noop_hourly_check(root, start[:10]),
    }


def _noop_hourly_check(root: Path, merged_day: str) -> dict:
    """Time `luigi ... RangeHourly` over 90 days of complete hours. The 2160 hour summaries are
    copies of a real one (the check reads only those); the command is the real one."""
    import datetime as dt

    summaries = next((root / "fab_merge_hourly").glob("v*"))
    template = next(summaries.glob(f"date={merged_day}/hour=00/manifest.json")).read_text()
    start = dt.datetime(2026, 6, 1)
    for h in range(90 * 24):
        folder = summaries / f"{start + dt.timedelta(hours=h):date=%Y-%m-%d/hour=%H}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifest.json").write_text(template)
    stop = start + dt.timedelta(days=90)
    seconds, _ = _luigi_range(root, f"{start:%Y-%m-%dT%H}", f"{stop:%Y-%m-%dT%H}", 1, "FabMergeHourly")
    return {
        "seconds": round(seconds, 2),
        "goal_seconds": 10,
        "ratio_to_goal": round(seconds / 10, 2),
        "hours": 90 * 24,
        "note": "whole luigi command, start-up included; the hour summaries are copies of a real one",
    }


def quality(args: argparse.Namespace) -> dict:
    """Files and MB checked per second by the quality monitor, for one window holding 200 demo-scale
    files (the 10-day floor's files all given upload times inside it). Conversions and the
    references are made first, untimed: every workflow shares them."""
    import datetime as dt

    root = Path(args.cache) / "quality"
    _simulate(root, 10)
    window = dt.datetime.fromisoformat(PIPELINE_START) + dt.timedelta(days=10)
    files = sorted(p for p in (root / "landing").glob("*/*/*.stdf.gz"))[:200]
    for i, path in enumerate(files):
        os.utime(path, (window.timestamp() + i, window.timestamp() + i))
    common = ["--local-scheduler", "--paths-root", str(root), "--log-level", "WARNING", "--workers", "2"]
    luigi_cli = [sys.executable, "-m", "luigi", "--module", "jobs.quality_monitor"]
    for fab in ("fab1", "fab2", "fab3"):
        prepare = [*luigi_cli, "MonitorReference", "--fab", fab, "--date", f"{window:%Y-%m-%d}", *common]
        subprocess.run(prepare, check=True, capture_output=True, cwd=REPO)
    convert = [
        *luigi_cli,
        "QualityMonitor",
        "--window",
        f"{window:%Y-%m-%dT%H%M}",
        *common,
        "--quality-monitor-window-minutes",
        "1440",
    ]
    shutil.rmtree(root / "quality_monitor", ignore_errors=True)
    subprocess.run(convert, check=True, capture_output=True, cwd=REPO)  # converts every file once
    shutil.rmtree(root / "quality_monitor", ignore_errors=True)
    quarantined = root / "quarantine"
    for held in quarantined.rglob("*.stdf.gz") if quarantined.exists() else []:
        shutil.move(held, json.loads(held.with_name(held.name + ".reason.json").read_text())["from"])
    started = time.perf_counter()
    subprocess.run(convert, check=True, capture_output=True, cwd=REPO)
    seconds = time.perf_counter() - started
    checked = json.loads(next((root / "quality_monitor").glob("v*/*/*/manifest.json")).read_text())["files"]
    if checked < len(files):  # (a final-test file of the floor may land inside the window too)
        raise SystemExit(f"scripts/bench quality: the window checked {checked} files, not {len(files)}")
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    return {
        "benchmark": "quality",
        "cpu_count": os.cpu_count(),
        "window_files": checked,
        "window_megabytes_gz": round(megabytes, 1),
        "seconds": round(seconds, 1),
        "files_per_second": round(checked / seconds, 1),
        "mb_per_second_gz": round(megabytes / seconds, 2),
        "note": "whole luigi command, start-up included; conversions and references existed",
    }


REPORT_START = "2026-11-01"
REPORT_DAYS = 3  # the third day is scored by a model (trained on the first, validated on the second)


def report(args: argparse.Namespace) -> dict:
    """YieldReport of a demo-scale day as a luigi command (start-up included) and as the stage's
    own seconds; then the drawing alone for a third, two thirds and all of the day's wafers."""
    import datetime as dt

    import luigi.configuration

    root = Path(args.cache) / "report"
    first = dt.date.fromisoformat(REPORT_START)
    last = first + dt.timedelta(days=REPORT_DAYS - 1)
    if not (root / "landing").exists():
        _simulate(root, REPORT_DAYS, start=REPORT_START)
    _luigi_range(root, str(first), str(last + dt.timedelta(days=1)), workers=2)
    luigi.configuration.get_config().set("paths", "root", str(root))
    from jobs.wafer_yield import YieldReport

    shutil.rmtree(YieldReport(date=last).folder())
    command = [
        sys.executable, "-m", "luigi", "--module", "jobs.wafer_yield", "YieldReport", "--date", str(last),
        "--local-scheduler", "--paths-root", str(root), "--log-level", "WARNING",
    ]  # fmt: skip
    started, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    command_seconds, command_cpu = time.perf_counter() - started, _children_cpu() - cpu
    manifest = YieldReport(date=last).manifest()
    return {
        "date": str(last),
        "dies": manifest["rows"]["dies"],
        "wafers": manifest["rows"]["wafers"],
        "previous_day_wafers": manifest["rows"]["previous_day_wafers"],
        "command_seconds": round(command_seconds, 2),
        "command_cpu_seconds": round(command_cpu, 2),
        "stage_seconds": manifest["seconds"],
        "goal_seconds": 20,
        "ratio_to_goal": round(command_seconds / 20, 2),
        "drawing_by_wafers": _report_scaling(last),
        "note": "command: the whole luigi command (start-up, reading, drawing, publishing); cpu seconds"
        " are what the wall time would be on an idle core (the stage is single-threaded)",
    }


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _report_scaling(day: Any) -> list[dict]:
    """render_report on the first third, two thirds and all of the day's wafers (and as many of
    the day before's): seconds, and seconds per wafer map drawn."""
    from dataclasses import replace

    from jobs.domain import report_page
    from jobs.domain import yield_views as views
    from jobs.wafer_yield import YieldReport, report_inputs

    def first_wafers(dies: Any, count: int) -> Any:
        return dies.merge(
            dies[views.WAFER].drop_duplicates().sort_values(views.WAFER).head(count), on=views.WAFER
        )

    inputs = report_inputs(day, YieldReport(date=day).trend_days())
    wafers = inputs.dies.groupby(views.WAFER).ngroups
    rows = []
    for count in sorted({max(1, wafers // 3), max(1, 2 * wafers // 3), wafers}):
        previous = inputs.previous and (inputs.previous[0], first_wafers(inputs.previous[1], count))
        subset = replace(inputs, dies=first_wafers(inputs.dies, count), previous=previous)
        with tempfile.TemporaryDirectory() as folder:
            started, cpu = time.perf_counter(), time.process_time()
            facts = report_page.render_report(subset, Path(folder))
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        maps = facts["rows"]["wafers"] + facts["rows"]["previous_day_wafers"]
        rows.append({"wafers": count, "wafer_maps": maps, "seconds": round(seconds, 2),
                     "cpu_seconds": round(cpu, 2), "cpu_seconds_per_map": round(cpu / maps, 3)})  # fmt: skip
    return rows


BENCHMARKS = {
    "ingest": ingest, "model": model, "pipeline": pipeline, "merge": merge, "quality": quality,
    "report": report,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS))
    parser.add_argument(
        "--cache", default=str(REPO / "bench-out"), help="where simulated bench files are kept"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    figures = only_json_on_stdout(BENCHMARKS[args.benchmark], args)
    print(json_text(figures), end="", flush=True)
    return 0


def only_json_on_stdout(benchmark: Callable[[argparse.Namespace], dict], args: argparse.Namespace) -> dict:
    """Run `benchmark` with file descriptor 1 pointing at stderr, so that nothing it or its child
    processes print (the simulator's first-run notes, luigi) lands before the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return benchmark(args)
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


if __name__ == "__main__":
    sys.exit(main())
