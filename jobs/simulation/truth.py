"""The ground truth under truth/ (never in STDF): the per-day parquet of final-test outcomes,
oracle.json (the AUC a perfect model reaches), faults.json (its entries) and README.md."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from jobs.files import atomic_path, write_json
from jobs.simulation.faults import FAULT_GRAMMAR, FAULT_KINDS, Fault

TRUTH_COLUMNS = ("lot_id", "wafer_id", "x_coord", "y_coord", "p_fail_true", "ft_failed")


def write_truth(path: Path, truth: dict[str, np.ndarray]) -> None:
    """truth/{fab}/{date}.parquet: the final-test outcome of each die that passed wafer sort that day."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("lot_id", pa.string()),
            ("wafer_id", pa.string()),
            ("x_coord", pa.int16()),
            ("y_coord", pa.int16()),
            ("p_fail_true", pa.float64()),
            ("ft_failed", pa.bool_()),
        ]
    )
    table = pa.table({c: truth.get(c, []) for c in TRUTH_COLUMNS}, schema=schema)
    table = table.sort_by(
        [
            ("lot_id", "ascending"),
            ("wafer_id", "ascending"),
            ("y_coord", "descending"),
            ("x_coord", "ascending"),
        ]
    )
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary, compression="zstd")


def fault_entry(root: Path, fab: str, day: dt.date, fault: Fault, path: Path | None, **detail: Any) -> dict:
    """One faults.json entry: the fault, where it hit (paths relative to the root) and its details."""

    def rel(p: Any) -> Any:
        return Path(p).relative_to(root).as_posix() if isinstance(p, Path) else p

    entry = dict(spec=fault.text, kind=fault.kind, fab=fab, date=day.isoformat(), file=rel(path))
    entry["what"] = FAULT_KINDS[fault.kind].what
    return entry | {k: [rel(p) for p in v] if isinstance(v, list) else rel(v) for k, v in detail.items()}


def merge_measurement_entries(entries: list[dict]) -> list[dict]:
    """The entries of the wafers of a fab-day, with those of each measurement fault (one per file)
    merged into one: `file` null, `files` the files, and per-file details as lists in file order."""
    merged: dict[str, dict] = {}
    kept = []
    for entry in entries:
        if FAULT_KINDS[entry["kind"]].target != "measurement":
            kept.append(entry)
        elif entry["spec"] not in merged:
            merged[entry["spec"]] = entry | dict(
                file=None, files=[entry["file"]], rebinned_dies=[entry["rebinned_dies"]]
            )
        else:
            merged[entry["spec"]]["files"].append(entry["file"])
            merged[entry["spec"]]["rebinned_dies"].append(entry["rebinned_dies"])
    return kept + list(merged.values())


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve, ties counted half: the value of sklearn's roc_auc_score
    (Mann-Whitney form, without importing scikit-learn's 2 s of modules)."""
    y_true, score = np.asarray(y_true, dtype=bool), np.asarray(score, dtype=float)
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2  # average 1-based rank of each distinct score
    positives, negatives = int(y_true.sum()), int((~y_true).sum())
    rank_sum = mid_rank[inverse][y_true].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def oracle_auc(truth: Any) -> dict[str, Any]:
    """AUC of p_fail_true against ft_failed: what a perfect model would reach."""
    y, p = np.asarray(truth["ft_failed"]), np.asarray(truth["p_fail_true"])
    auc = roc_auc(y, p) if 0 < y.sum() < len(y) else None
    return dict(auc=None if auc is None else round(auc, 4), dies=len(y), ft_failed=int(y.sum()))


def update_oracle(root: Path, days: Iterable[dt.date]) -> dict[str, Any]:
    """(Re)compute the oracle AUC of the given days from the truth files, merged into oracle.json."""
    import pyarrow.parquet as pq

    path = root / "truth" / "oracle.json"
    oracle = json.loads(path.read_text()) if path.exists() else {}
    by_day = oracle.get("days", {})
    for day in days:
        files = sorted((root / "truth").glob(f"*/{day.isoformat()}.parquet"))
        tables = {
            f.parent.name: pq.read_table(f, columns=["p_fail_true", "ft_failed"]).to_pydict() for f in files
        }
        tables = {fab: t for fab, t in tables.items() if t["ft_failed"]}
        if not tables:
            by_day.pop(day.isoformat(), None)
            continue
        pooled = {k: np.concatenate([t[k] for t in tables.values()]) for k in ("p_fail_true", "ft_failed")}
        by_day[day.isoformat()] = oracle_auc(pooled) | {
            "fabs": {f: oracle_auc(t) for f, t in sorted(tables.items())}
        }
    oracle = {
        "definition": "roc_auc_score(ft_failed, p_fail_true) over the dies of a wafer-sort day "
        "(truth/{fab}/{day}.parquet); per fab under 'fabs'",
        "days": dict(sorted(by_day.items())),
    }
    write_json(path, oracle)
    return oracle


def update_faults(root: Path, simulated: set[tuple[str, str]], entries: list[dict]) -> list[dict]:
    """Merge this run's fault entries into faults.json, replacing those of re-simulated fab-days."""
    path = root / "truth" / "faults.json"
    old = json.loads(path.read_text())["faults"] if path.exists() else []
    kept = [e for e in old if (e["fab"], e["date"]) not in simulated]
    faults = sorted(kept + entries, key=lambda e: (e["date"], e["fab"], e["kind"], e.get("file") or ""))
    write_json(path, {"grammar": FAULT_GRAMMAR, "faults": faults})
    return faults


def write_truth_readme(root: Path, faults: list[dict]) -> None:
    lines = [
        "# Ground truth of the simulated test floor (written by jobs/simulation/simulate.py; never in STDF)",
        "",
        "- `{fab}/{date}.parquet`: one row per die that passed wafer sort on that date and got final test",
        "  (its FT file lands in `landing/{fab}/{date+1}/FT_{lot}.stdf.gz`): lot_id (str), wafer_id (str,",
        "  '01'..'25'), x_coord (int16), y_coord (int16), p_fail_true (float64), ft_failed (bool).",
        "- `oracle.json`: AUC of p_fail_true against ft_failed per day and per fab-day (a perfect model).",
        "- `faults.json`: the faults applied, one entry per damaged file or fab-day; byte offsets are in",
        "  the decompressed STDF stream, counted from the FAR. A `dialect` entry maps the standard test",
        "  names and units to the fab's (dialect value = standard value x factor; TEST_NUMs unchanged).",
        "",
        "All STDF times are UTC epoch seconds, except where a `localtime` fault below says otherwise:",
        "there the MIR, WIR, WRR and MRR times are the fab's local time (UTC + offset_hours).",
        "",
        "## Faults applied",
        "",
    ]
    if any(FAULT_KINDS[e["kind"]].target in ("results", "measurement") for e in faults):
        lines[-2:-2] = [  # only then, so that runs without them keep their README
            "A `missing`, `outlier` or `drift` fault changes what wafer-sort files say was measured;",
            "the dies, their final test and the truth here are those of the run without it.",
            "",
        ]
    if any(e["kind"] == "shift" for e in faults):
        lines[-2:-2] = [
            "A `shift` fault changes how final test fails: for the dies sorted on its fab-days the truth",
            "here (p_fail_true, ft_failed) and oracle.json follow the shifted mechanism.",
            "",
        ]
    for e in faults or [{"kind": "none"}]:
        if e["kind"] == "none":
            lines.append("None.")
        elif e["kind"] == "localtime":
            files = len(e["files"])
            lines.append(
                f"- {e['date']} {e['fab']}: localtime UTC{e['offset_hours']:+g} h in {files} file(s)"
            )
        elif e["kind"] == "missing":
            lines.append(
                f"- {e['date']} {e['fab']}: missing {len(e['tests'])} test(s) in {e['file']}:"
                f" {', '.join(e['tests'])}"
            )
        elif e["kind"] == "outlier":
            lines.append(
                f"- {e['date']} {e['fab']}: outlier {e['test']} = {e['value']:g} {e['units']} on"
                f" {e['dies']} dies in {e['file']}"
            )
        elif e["kind"] == "drift":
            lines.append(
                f"- {e['date']} {e['fab']}: drift {e['family']}* {e['shift_sigmas']:+g} sigma in"
                f" {len(e['files'])} wafer-sort file(s) (see faults.json)"
            )
        elif e["kind"] == "shift":
            lines.append(
                f"- {e['date']} {e['fab']}: shift (strength {e['strength']:g}) of final test:"
                f" {e['ft_failed']} of {e['dies']} dies failed, in {len(e['files'])} final-test file(s)"
            )
        elif e["kind"] == "dialect":
            units = ", ".join(f"{p} {a}->{b} x{f:g}" for p, (a, b, f) in e["units"].items())
            lines.append(
                f"- {e['date']} {e['fab']}: dialect in {len(e['files'])} wafer-sort file(s): {units};"
                f" {len(e['renames'])} tests renamed (see faults.json)"
            )
        else:
            where = f" at byte {e['byte_offset']}" if "byte_offset" in e else ""
            lines.append(f"- {e['date']} {e['fab']}: {e['kind']} {e['file'] or ''}{where}".rstrip())
    (root / "truth" / "README.md").write_text("\n".join(lines) + "\n")
