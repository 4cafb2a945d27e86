"""The quality monitor: every 15 minutes, the STDF files that landed in the window are checked,
bad ones are quarantined, and drift of key parameters raises a retrain request.

    MonitorReference(fab, date)  the fab's product catalogues and key-parameter values over the
                                 `reference_days` before `date` (the files still in the landing zone)
    QualityMonitor(window)       the window's files: record structure, test program against the
                                 catalogue, physical bounds, NaN/inf, duplicate dies and files;
                                 window yield; PSI and KS drift per fab and key parameter

Run by `RangeByMinutes --of QualityMonitor --minutes-interval 15`. A file's upload time is its
modification time. Checks are the plain functions of jobs/domain/quality.py on each file's tables.
A file failing a check of severity "error" is moved to `{root}/quarantine/quality_monitor/...`
with its reasons (scripts/quarantine lists and releases). Drift does not quarantine (the data is
sound; the world moved): it alerts and writes `{root}/requests/retrain/*.json`, which the next
wafer-yield run honours.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import html
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from jobs.domain import quality
from jobs.fab_merge import harmonized_file, test_names
from jobs.files import read_json, write_json
from jobs.ops import runtime
from jobs.ops.alerts import alert
from jobs.ops.quarantine import quarantine_file
from jobs.pipeline.convert import ConvertFile, content_sha256, converted_folder
from jobs.pipeline.landing import landed_files, landing_folders, still_landed
from jobs.pipeline.parameters import PlausibleDateMinuteParameter
from jobs.pipeline.settings import paths, quality_monitor, repo_file
from jobs.pipeline.stages import FabDayStage, StageTask
from jobs.wafer_yield import retrain_requests_dir

runtime.install()
WORKFLOW = "quality_monitor"
SAMPLE = 50_000  # reference values kept per key parameter


def read_bounds() -> pd.DataFrame:
    """Physical bounds, checked against the canonical units of the test-name mapping."""
    path = repo_file(quality_monitor().physical_bounds)
    bounds = pd.read_csv(path, comment="#")
    units = test_names().drop_duplicates("canonical").set_index("canonical")["unit"]
    for row in bounds.itertuples():
        matched = units[units.index.str.match(fnmatch.translate(row.test))]
        wrong = matched[matched != row.unit]
        if len(wrong):
            raise ValueError(
                f"{path}: {row.test} is in {row.unit}, but {wrong.index[0]} is in {wrong.iloc[0]}"
            )
    return bounds


# --- the reference ---------------------------------------------------------------------------------


class MonitorReference(FabDayStage):
    """`monitor_reference/{tag}/date=D/fab=F/`: catalogue.parquet (per job: test_num, test_txt,
    files that ran it) and key_values.parquet (test, value: a seeded sample per key parameter)."""

    stage = "monitor_reference"
    reads = (ConvertFile,)
    workflow = WORKFLOW

    def run(self) -> Iterator[list[ConvertFile]]:
        first = self.date - dt.timedelta(days=quality_monitor().reference_days)
        folders = landing_folders(self.fab, first, self.date - dt.timedelta(days=1))
        files = [f for folder in folders for f in landed_files(folder)]
        targets = yield [ConvertFile(path=str(f)) for f in files]
        converted = (read_json(Path(t.path)) for _, t in still_landed(files, targets))
        conversions = {c["input"]["sha256"]: c for c in converted}
        readable = {sha: c for sha, c in conversions.items() if c.get("status", "ok") == "ok"}
        self.set_status_message(f"reference of {self.fab}: {len(readable)} files")
        catalogue = catalogue_of(readable)
        day_of = {c["input"]["sha256"]: Path(c["input"]["path"]).parent.name for c in readable.values()}
        values = key_values(
            [(sha, day_of[sha]) for sha, c in readable.items() if c["file"]["wafers"]], self.fab
        )
        with self.publish() as (work, manifest):
            catalogue.to_parquet(work / "catalogue.parquet", index=False)
            values.to_parquet(work / "key_values.parquet", index=False)
            manifest.update(
                days=[f.name for f in folders], files=len(readable), rows={"key_values": len(values)}
            )


def catalogue_of(conversions: dict[str, dict]) -> pd.DataFrame:
    """Per job, the tests its files ran and in how many files (a test in most files belongs to
    the program; one seen once is not required)."""
    frames = []
    for sha, conversion in conversions.items():
        tests = pd.read_parquet(converted_folder(sha) / "tests.parquet", columns=["test_num", "test_txt"])
        frames.append(tests.assign(job=conversion["file"]["job"]))
    if not frames:
        return pd.DataFrame({"job": [], "test_num": [], "test_txt": [], "files": []})
    table = pd.concat(frames, ignore_index=True)
    counted = table.groupby(["job", "test_num"]).agg(
        test_txt=("test_txt", "last"), files=("test_txt", "size")
    )
    return counted.reset_index()


def key_values(shas: list[tuple[str, str]], fab: str) -> pd.DataFrame:
    """Values of the key parameters in the files (sha256, landing day): a seeded sample per test."""
    keys = quality_monitor().key_test_list()
    frames = [harmonized_file(converted_folder(sha), fab).assign(day=day) for sha, day in shas]
    if not frames:
        return pd.DataFrame({"test": [], "value": [], "day": []})
    values = pd.concat(frames, ignore_index=True)
    values = values[values["test"].isin(keys)][["test", "value", "day"]]
    return values.sample(frac=1.0, random_state=0).groupby("test").head(SAMPLE)  # a seeded sample per test


def program_catalogue(reference: pd.DataFrame, job: str) -> pd.DataFrame:
    """The tests of `job` seen in at least half of the reference files that ran the job's program."""
    mine = reference[reference["job"] == job]
    return mine[mine["files"] >= 0.5 * mine["files"].max()] if len(mine) else mine


# --- the window --------------------------------------------------------------------------------------


class QualityMonitor(StageTask):
    """`quality_monitor/{tag}/date=D/window=HHMM/`: report.json, report.html and the manifest."""

    stage = "monitor"
    folder_name = "quality_monitor"
    reads = (MonitorReference,)
    workflow = WORKFLOW
    period_parameter = "window"
    partition_glob = "date=*/window=*"
    window = PlausibleDateMinuteParameter(
        description="the window's start (UTC); it lasts [quality_monitor] window_minutes"
    )

    def partition(self) -> str:
        return f"date={self.window:%Y-%m-%d}/window={self.window:%H%M}"

    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.window).tz_localize("UTC")

    def end(self) -> pd.Timestamp:
        return self.start() + pd.Timedelta(minutes=quality_monitor().window_minutes)

    def requires(self) -> list[MonitorReference]:
        return [MonitorReference(fab=fab, date=self.window.date()) for fab in quality_monitor().fab_list()]

    def landed(self) -> list[tuple[str, Path]]:
        """(fab, file) of every file uploaded in the window, into any day's folder (a released
        file goes back to its own day). Folders untouched since the window began are skipped."""
        start, end = self.start().timestamp(), self.end().timestamp()
        found = []
        for fab in quality_monitor().fab_list():
            fab_landing = paths().root_path() / "landing" / fab
            folders = sorted(fab_landing.iterdir()) if fab_landing.exists() else []
            for folder in (f for f in folders if f.is_dir() and f.stat().st_mtime >= start):
                found += [(fab, f) for f in landed_files(folder) if start <= f.stat().st_mtime < end]
        return found

    def run(self) -> Iterator[list[ConvertFile]]:
        landed = self.landed()
        targets = yield [ConvertFile(path=str(f)) for _, f in landed]
        fab_of = dict((path, fab) for fab, path in landed)
        present = still_landed([path for _, path in landed], targets)
        self.set_status_message(f"checking {len(present)} files")
        context = WindowContext.build(self.window.date(), landed)
        files = [check_file(fab_of[path], path, read_json(Path(t.path)), context) for path, t in present]
        quarantined = [self._quarantine(f) for f in files if f["failed"]]
        window = window_checks([f for f in files if not f["failed"]], self.window.date())
        self._drift_actions(window)
        report = {
            "window": f"{self.start().isoformat()}/{self.end().isoformat()}",
            "files": [{k: v for k, v in f.items() if k not in ("dies", "values")} for f in files],
            "quarantined": quarantined,
            "window_checks": [c.as_dict() for c in window],
        }
        with self.publish() as (work, manifest):
            write_json(work / "report.json", report)
            (work / "report.html").write_text(render_html(report), encoding="utf-8")
            manifest.update(
                files=len(files),
                megabytes=round(sum(f["bytes"] for f in files) / 1e6, 3),
                quarantined=[q["file"] for q in quarantined],
                failed_window_checks=[c.name for c in window if not c.passed and c.severity == "error"],
            )

    def _quarantine(self, checked: dict[str, Any]) -> dict[str, Any]:
        path = Path(checked["path"])
        failed = [c for c in checked["checks"] if c["name"] in checked["failed"]]
        reason = {"failed": checked["failed"], "checks": failed, "window": f"{self.window:%Y-%m-%dT%H%M}"}
        day = dt.date.fromisoformat(path.parent.name)
        moved = quarantine_file(path, WORKFLOW, checked["fab"], day, reason)
        why = "; ".join(c["message"] for c in failed)
        alert(
            WORKFLOW,
            self.task_id,
            "warning",
            f"quarantined {path.name}: {why}",
            key=f"quarantine {checked['fab']}",
            file=str(moved),
        )
        return {"file": path.name, "fab": checked["fab"], "moved_to": str(moved), "failed": checked["failed"]}

    def _drift_actions(self, window: list[quality.Check]) -> None:
        for check in window:
            if (
                check.name.split(": ")[-1].startswith("drift")
                and not check.passed
                and check.severity == "error"
            ):
                fab, test = check.name.split(": ")[0], check.name.split("drift ")[-1]
                request = {
                    "fab": fab,
                    "test": test,
                    "window": f"{self.window:%Y-%m-%dT%H:%M}",
                    **check.figures,
                }
                write_json(retrain_requests_dir() / f"{self.window:%Y-%m-%dT%H%M}_{fab}_{test}.json", request)
                message = f"drift on {fab} {test}: {check.message}; retrain requested"
                alert(WORKFLOW, self.task_id, "warning", message, key=f"drift {fab} {test}", **request)


def _landed(path: Path) -> tuple[float, str, str] | None:
    """(upload time, name, sha256) of a landed file; None if it was just set aside."""
    try:
        return path.stat().st_mtime, path.name, content_sha256(path)
    except FileNotFoundError:
        return None


@dataclass
class WindowContext:
    """What every file check of a window reads, read once: the physical bounds, each fab's
    catalogues of the window's day, and each fab's landed files with their sha256."""

    bounds: pd.DataFrame
    catalogues: dict[str, pd.DataFrame]
    landed: dict[str, list[tuple[float, str, str]]]  # fab -> (upload time, name, sha256)

    @classmethod
    def build(cls, day: dt.date, window_files: list[tuple[str, Path]]) -> WindowContext:
        first = day - dt.timedelta(days=quality_monitor().reference_days)
        catalogues, landed = {}, {}
        for fab in quality_monitor().fab_list():
            reference = MonitorReference(fab=fab, date=day).folder() / "catalogue.parquet"
            catalogues[fab] = pd.read_parquet(reference)
            folders = set(landing_folders(fab, first, day + dt.timedelta(days=1)))
            folders |= {path.parent for f, path in window_files if f == fab}
            landed[fab] = [entry for folder in folders for f in landed_files(folder) if (entry := _landed(f))]
        return cls(read_bounds(), catalogues, landed)

    def landed_before(self, fab: str, path: Path) -> dict[str, str]:
        """sha256 -> name of the fab's files that landed before `path`."""
        mine = (path.stat().st_mtime, path.name)
        return {sha: name for mtime, name, sha in self.landed[fab] if (mtime, name) < mine}


def check_file(fab: str, path: Path, conversion: dict[str, Any], context: WindowContext) -> dict[str, Any]:
    """Every file check on one landed file; `failed` lists the error checks it failed."""
    name = f"{fab}/{path.parent.name}/{path.name}"
    checked: dict[str, Any] = {"fab": fab, "path": str(path), "name": name, "bytes": path.stat().st_size}
    if conversion.get("status", "ok") != "ok":
        check = quality.Check(
            f"{name}: decodes",
            False,
            "error",
            conversion["error"],
            {"byte_offset": conversion["byte_offset"]},
        )
        return {**checked, "checks": [check.as_dict()], "failed": [check.name]}
    sha, facts = conversion["input"]["sha256"], conversion["file"]
    folder = converted_folder(sha)
    tests = pd.read_parquet(folder / "tests.parquet", columns=["test_num", "test_txt"])
    parts = pd.read_parquet(folder / "parts.parquet").rename(columns={"part_index": "part_key"})
    results = pd.read_parquet(folder / "results.parquet", columns=["part_index", "kind", "result"])
    values = harmonized_file(folder, fab) if facts["wafers"] else pd.DataFrame({"test": [], "value": []})
    strict = quality.Thresholds(max_nonfinite_share=0, max_duplicate_die_share=0)  # per file: none at all
    checks = [
        quality.Check(
            f"{name}: decodes", True, "error", f"{sum(conversion['record_counts'].values())} records read"
        ),
        quality.check_record_structure(name, {**facts, "record_counts": conversion["record_counts"]}),
        quality.check_catalogue(name, tests, program_catalogue(context.catalogues[fab], facts["job"])),
        quality.check_finite_results(name, results[results["kind"] != "FTR"], strict),
        quality.check_duplicate_dies(name, parts.dropna(subset=["x_coord", "y_coord"]), strict),
        quality.check_duplicate_file(name, sha, context.landed_before(fab, path)),
    ]
    if facts["wafers"]:  # the bounds are of wafer-sort tests
        checks.insert(3, quality.check_physical_bounds(name, values, context.bounds))
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


def window_checks(files: list[dict[str, Any]], day: dt.date) -> list[quality.Check]:
    """Checks over the window's sound files: wafer-sort yield, and drift per fab and key parameter
    against the fab's reference of `day`."""
    settings = quality_monitor()
    limits = quality.DriftLimits(settings.psi_limit, settings.lot_sigmas, settings.ks_alpha)
    sound = [f for f in files if len(f.get("values", ()))]  # wafer sort (final test has no key tests)
    dies = [f["dies"].assign(part_key=f["dies"]["part_key"] + 10_000_000 * i) for i, f in enumerate(sound)]
    checks = [quality.check_window_yield(pd.concat(dies) if dies else pd.DataFrame(), settings.yield_floor)]
    for fab in sorted({f["fab"] for f in sound}):
        current = pd.concat([f["values"] for f in sound if f["fab"] == fab])
        reference = pd.read_parquet(MonitorReference(fab=fab, date=day).folder() / "key_values.parquet")
        for test in settings.key_test_list():
            before = reference[reference["test"] == test]
            now = current.loc[current["test"] == test, "value"].to_numpy(dtype=float)
            lots = before.groupby("day")["value"].median().to_numpy()
            checks.append(
                quality.check_drift(fab, test, before["value"].to_numpy(dtype=float), now, lots, limits)
            )
    return checks


def render_html(report: dict[str, Any]) -> str:
    """A small self-contained page: the window's files, their checks, quarantine, drift."""
    rows = []
    for f in report["files"]:
        for c in f["checks"]:
            status = "ok" if c["passed"] else ("FAIL" if c["severity"] == "error" else "warn")
            rows.append((status, c["name"], c["message"]))
    for c in report["window_checks"]:
        status = "ok" if c["passed"] else ("FAIL" if c["severity"] == "error" else "warn")
        rows.append((status, c["name"], c["message"]))
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
