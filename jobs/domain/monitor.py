"""The quality monitor's computations (jobs/quality_monitor.py wires them): its reference, the
checks of each landed file and of the window, the retrain requests and the HTML page. No Luigi;
the checks themselves are jobs/domain/quality.py's.

    monitor_reference(conversions, fab, names, keys) -> catalogue, key-parameter sample, files
    check_file(fab, conversion, context)             -> every check of one landed file
    inspect_window(files, context)                   -> the files' checks and the window's
    retrain_requests(window_checks, window)          -> the drift errors as retrain requests
    window_report(...), render_html(report)          -> report.json's content, and its page
"""

from __future__ import annotations

import fnmatch
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from jobs.domain import quality
from jobs.domain.conversion import Conversion, distinct
from jobs.domain.damage import check_damage
from jobs.domain.merge import harmonized_file
from jobs.domain.results import of_kinds

SAMPLE = 50_000  # reference values kept per key parameter
OFFSET = 10_000_000  # part_key offset per file in the window's dies: keys stay distinct


def checked_bounds(bounds: pd.DataFrame, names: pd.DataFrame, source: str) -> pd.DataFrame:
    """Physical bounds (test glob, unit, ...) whose units are the canonical units of the tests they
    match in the test-name mapping `names`; a ValueError naming `source` otherwise."""
    units = names.drop_duplicates("canonical").set_index("canonical")["unit"]
    for row in bounds.itertuples():
        matched = units[units.index.str.match(fnmatch.translate(row.test))]
        wrong = matched[matched != row.unit]
        if len(wrong):
            raise ValueError(
                f"{source}: {row.test} is in {row.unit}, but {wrong.index[0]} is in {wrong.iloc[0]}"
            )
    return bounds


# --- the reference ---------------------------------------------------------------------------------


def monitor_reference(
    conversions: list[Conversion], fab: str, names: pd.DataFrame, keys: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """A fab's reference from its earlier files: the catalogue (catalogue_of), the key parameters'
    values (key_values), and how many readable files there were (a resent file once)."""
    readable = distinct(conversions)
    wafer_sort = [c for c in readable if c.facts["wafers"]]
    return catalogue_of(readable), key_values(wafer_sort, fab, names, keys), len(readable)


def catalogue_of(conversions: list[Conversion]) -> pd.DataFrame:
    """Per job, the tests its files ran and in how many files (a test in most files belongs to
    the program; one seen once is not required)."""
    frames = []
    for conversion in conversions:
        tests = pd.read_parquet(conversion.folder / "tests.parquet", columns=["test_num", "test_txt"])
        frames.append(tests.assign(job=conversion.facts["job"]))
    if not frames:
        return pd.DataFrame({"job": [], "test_num": [], "test_txt": [], "files": []})
    table = pd.concat(frames, ignore_index=True)
    counted = table.groupby(["job", "test_num"]).agg(
        test_txt=("test_txt", "last"), files=("test_txt", "size")
    )
    return counted.reset_index()


def key_values(conversions: list[Conversion], fab: str, names: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Values of the key parameters `keys` in the files: test, value, day (the landing day the
    file was converted from); a seeded sample of at most SAMPLE per test."""
    frames = [
        harmonized_file(c.folder, fab, names).assign(day=Path(c.manifest["input"]["path"]).parent.name)
        for c in conversions
    ]
    if not frames:
        return pd.DataFrame({"test": [], "value": [], "day": []})
    values = pd.concat(frames, ignore_index=True)
    values = values[values["test"].isin(keys)][["test", "value", "day"]]
    return values.sample(frac=1.0, random_state=0).groupby("test").head(SAMPLE)


def program_catalogue(reference: pd.DataFrame, job: str) -> pd.DataFrame:
    """The tests of `job` seen in at least half of the reference files that ran the job's program."""
    mine = reference[reference["job"] == job]
    return mine[mine["files"] >= 0.5 * mine["files"].max()] if len(mine) else mine


# --- the window --------------------------------------------------------------------------------------


@dataclass
class WindowContext:
    """What every check of a window reads, read once: the test-name mapping, the physical bounds,
    each fab's reference (catalogue, and the folder of its key values), each fab's landed files
    with their sha256, and the limits."""

    names: pd.DataFrame
    bounds: pd.DataFrame
    catalogues: dict[str, pd.DataFrame]
    references: dict[str, Path]  # fab -> its reference folder (key_values.parquet)
    landed: dict[str, list[tuple[float, str, str]]]  # fab -> (upload time, name, sha256)
    key_tests: list[str]
    drift: quality.DriftLimits
    yield_floor: float

    def landed_before(self, fab: str, path: Path) -> dict[str, str]:
        """sha256 -> name of the fab's files that landed before `path`."""
        mine = (path.stat().st_mtime, path.name)
        return {sha: name for mtime, name, sha in self.landed[fab] if (mtime, name) < mine}


def inspect_window(
    files: list[tuple[str, Conversion]], context: WindowContext
) -> tuple[list[dict[str, Any]], list[quality.Check]]:
    """Every check of each (fab, landed file), and the window's checks over the files that
    failed none of their error checks."""
    checked = [check_file(fab, conversion, context) for fab, conversion in files]
    return checked, window_checks([f for f in checked if not f["failed"]], context)


def check_file(fab: str, conversion: Conversion, context: WindowContext) -> dict[str, Any]:
    """Every file check on one landed file; `failed` lists the error checks it failed."""
    path = conversion.path
    name = f"{fab}/{path.parent.name}/{path.name}"
    checked: dict[str, Any] = {"fab": fab, "path": str(path), "name": name, "bytes": path.stat().st_size}
    manifest = conversion.manifest
    if not conversion.readable:  # quarantined, by the policy of jobs/domain/damage.py
        check = quality.Check(
            f"{name}: decodes", False, "error", manifest["error"], {"byte_offset": manifest["byte_offset"]}
        )
        return {**checked, "checks": [check.as_dict()], "failed": [check.name]}
    sha, facts, folder = conversion.sha256, conversion.facts, conversion.folder
    tests = pd.read_parquet(folder / "tests.parquet", columns=["test_num", "test_txt"])
    parts = pd.read_parquet(folder / "parts.parquet").rename(columns={"part_index": "part_key"})
    results = pq.read_table(folder / "results.parquet", columns=["kind", "result"])
    measured = results.filter(of_kinds(results, ["PTR", "MPR"]))["result"]
    no_values = pd.DataFrame({"test": [], "value": []})
    values = harmonized_file(folder, fab, context.names) if facts["wafers"] else no_values
    strict = quality.Thresholds(max_nonfinite_share=0, max_duplicate_die_share=0)  # per file: none at all
    records = manifest["record_counts"]
    checks = [
        quality.Check(f"{name}: decodes", True, "error", f"{sum(records.values())} records read"),
        quality.check_record_structure(name, {**facts, "record_counts": records}),
        check_damage(name, manifest),
        quality.check_catalogue(name, tests, program_catalogue(context.catalogues[fab], facts["job"])),
    ]
    if facts["wafers"]:  # the bounds are of wafer-sort tests
        checks.append(quality.check_physical_bounds(name, values, context.bounds))
    checks += [
        quality.check_finite_results(name, quality.count_nonfinite(measured), len(measured), strict),
        quality.check_duplicate_dies(name, parts.dropna(subset=["x_coord", "y_coord"]), strict),
        quality.check_duplicate_file(name, sha, context.landed_before(fab, path)),
    ]
    failed = [c.name for c in checks if not c.passed and c.severity == "error"]
    return {
        **checked,
        "sha256": sha,
        "job": facts["job"],
        "dies": parts,
        "values": values,
        "checks": [c.as_dict() for c in checks],
        "failed": failed,
    }


def window_checks(files: list[dict[str, Any]], context: WindowContext) -> list[quality.Check]:
    """Checks over the window's sound files: wafer-sort yield, and drift per fab and key parameter
    against the fab's reference."""
    sound = [f for f in files if len(f.get("values", ()))]  # wafer sort (final test has no key tests)
    dies = [f["dies"].assign(part_key=f["dies"]["part_key"] + OFFSET * i) for i, f in enumerate(sound)]
    checks = [quality.check_window_yield(pd.concat(dies) if dies else pd.DataFrame(), context.yield_floor)]
    for fab in sorted({f["fab"] for f in sound}):
        current = pd.concat([f["values"] for f in sound if f["fab"] == fab])
        reference = pd.read_parquet(context.references[fab] / "key_values.parquet")
        for test in context.key_tests:
            before = reference[reference["test"] == test]
            now = current.loc[current["test"] == test, "value"].to_numpy(dtype=float)
            lots = before.groupby("day")["value"].median().to_numpy()
            checks.append(
                quality.check_drift(
                    fab, test, before["value"].to_numpy(dtype=float), now, lots, context.drift
                )
            )
    return checks


def retrain_requests(checks: list[quality.Check], window: str) -> list[tuple[dict[str, Any], str]]:
    """Per failed drift check, a retrain request (fab, test, window and the drift figures) and
    the check's message."""
    requests = []
    for check in checks:
        if check.name.split(": ")[-1].startswith("drift") and not check.passed and check.severity == "error":
            fab, test = check.name.split(": ")[0], check.name.split("drift ")[-1]
            requests.append(({"fab": fab, "test": test, "window": window, **check.figures}, check.message))
    return requests


def window_report(
    window: str, files: list[dict[str, Any]], quarantined: list[dict[str, Any]], checks: list[quality.Check]
) -> dict[str, Any]:
    """report.json: the window, each file's checks, what was quarantined, the window's checks."""
    return {
        "window": window,
        "files": [{k: v for k, v in f.items() if k not in ("dies", "values")} for f in files],
        "quarantined": quarantined,
        "window_checks": [c.as_dict() for c in checks],
    }


def render_html(report: dict[str, Any]) -> str:
    """A small self-contained page: the window's files, their checks, quarantine, drift."""
    checks = [c for f in report["files"] for c in f["checks"]] + report["window_checks"]
    rows = [(_status(c), c["name"], c["message"]) for c in checks]
    colour = {"ok": "#2e7d32", "FAIL": "#c62828", "warn": "#ef6c00"}
    body = "".join(
        f"<tr><td style='color:{colour[s]};font-weight:bold'>{s}</td>"
        f"<td>{html.escape(n)}</td><td>{html.escape(m)}</td></tr>"
        for s, n, m in rows
    )
    held = "".join(
        f"<li>{html.escape(q['file'])}: {html.escape('; '.join(q['failed']))}</li>"
        for q in report["quarantined"]
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>STDF quality monitor</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:13px}</style></head><body>"
        f"<h1>STDF quality monitor</h1><p>Window {html.escape(report['window'])}: "
        f"{len(report['files'])} file(s), {len(report['quarantined'])} quarantined.</p>"
        f"<h2>Quarantined</h2><ul>{held or '<li>none</li>'}</ul>"
        f"<h2>Checks</h2><table><tr><th>status</th><th>check</th><th>figures</th></tr>{body}</table></body></html>"
    )


def _status(check: dict[str, Any]) -> str:
    return "ok" if check["passed"] else ("FAIL" if check["severity"] == "error" else "warn")
