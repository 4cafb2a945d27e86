"""The quality monitor: every 15 minutes, the STDF files that landed in the window are checked,
bad ones are quarantined, and drift of key parameters raises a retrain request.

    MonitorReference(fab, date)  the fab's product catalogues and key-parameter values over the
                                 `reference_days` before `date` (the files still in the landing zone)
    QualityMonitor(window)       the window's files: record structure, test program against the
                                 catalogue, physical bounds, NaN/inf, duplicate dies and files;
                                 window yield; PSI and KS drift per fab and key parameter

Run by `RangeByMinutes --of QualityMonitor --minutes-interval 15`. A file's upload time is its
modification time. The checks are jobs/domain/monitor.py's (on jobs/domain/quality.py's); these
tasks only wire them.
A file failing a check of severity "error" is moved to `{root}/quarantine/quality_monitor/...`
with its reasons (scripts/quarantine lists and releases). Drift does not quarantine (the data is
sound; the world moved): it alerts and writes `{root}/requests/retrain/*.json`, which the next
wafer-yield run honours.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pandas as pd

from jobs.domain import monitor, quality
from jobs.files import write_json
from jobs.ops import damaged, runtime
from jobs.ops.alerts import alert
from jobs.ops.quarantine import quarantine_file
from jobs.pipeline.convert import ConvertFile, content_sha256, landed_conversions
from jobs.pipeline.landing import landed_files, landing_folders
from jobs.pipeline.parameters import PlausibleDateMinuteParameter
from jobs.pipeline.reference import physical_bounds, test_names
from jobs.pipeline.requests import request_retrain
from jobs.pipeline.settings import paths, quality_monitor
from jobs.pipeline.stages import FabDayStage, StageTask

runtime.install()
WORKFLOW = "quality_monitor"


class MonitorReference(FabDayStage):
    """`monitor_reference/{tag}/date=D/fab=F/`: catalogue.parquet (per job: test_num, test_txt,
    files that ran it) and key_values.parquet (test, value: a seeded sample per key parameter)."""

    stage = "monitor_reference"
    reads = (ConvertFile,)
    workflow = WORKFLOW

    def run(self) -> Generator[list[ConvertFile], Any, None]:
        settings = quality_monitor()
        first = self.date - dt.timedelta(days=settings.reference_days)
        folders = landing_folders(self.fab, first, self.date - dt.timedelta(days=1))
        conversions = yield from landed_conversions([f for folder in folders for f in landed_files(folder)])
        self.set_status_message(f"reference of {self.fab}: {len(conversions)} files")
        catalogue, values, files = monitor.monitor_reference(
            conversions, self.fab, test_names(), settings.key_test_list()
        )
        with self.publish() as (work, manifest):
            catalogue.to_parquet(work / "catalogue.parquet", index=False)
            values.to_parquet(work / "key_values.parquet", index=False)
            manifest.update(days=[f.name for f in folders], files=files, rows={"key_values": len(values)})


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

    def requires(self) -> dict[str, MonitorReference]:
        return {
            fab: MonitorReference(fab=fab, date=self.window.date()) for fab in quality_monitor().fab_list()
        }

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

    def run(self) -> Generator[list[ConvertFile], Any, None]:
        landed = self.landed()
        conversions = yield from landed_conversions([path for _, path in landed])
        fab_of = dict((path, fab) for fab, path in landed)
        self.set_status_message(f"checking {len(conversions)} files")
        damaged.flag_truncated(WORKFLOW, self.task_id, [(c.path, c.manifest) for c in conversions])
        files, window = monitor.inspect_window(
            [(fab_of[c.path], c) for c in conversions], self.context(landed)
        )
        quarantined = [self._quarantine(f) for f in files if f["failed"]]
        self._request_retrains(window)
        span = f"{self.start().isoformat()}/{self.end().isoformat()}"
        report = monitor.window_report(span, files, quarantined, window)
        with self.publish() as (work, manifest):
            write_json(work / "report.json", report)
            (work / "report.html").write_text(monitor.render_html(report), encoding="utf-8")
            manifest.update(
                files=len(files),
                megabytes=round(sum(f["bytes"] for f in files) / 1e6, 3),
                quarantined=[q["file"] for q in quarantined],
                failed_window_checks=[c.name for c in window if not c.passed and c.severity == "error"],
            )

    def context(self, window_files: list[tuple[str, Path]]) -> monitor.WindowContext:
        """The window's context: settings, references, and each fab's files landed from the
        reference days to the day after (with the window's own folders), with their sha256."""
        settings, day = quality_monitor(), self.window.date()
        first = day - dt.timedelta(days=settings.reference_days)
        references = {fab: Path(target.path).parent for fab, target in self.input().items()}
        landed = {}
        for fab in settings.fab_list():
            folders = set(landing_folders(fab, first, day + dt.timedelta(days=1)))
            folders |= {path.parent for f, path in window_files if f == fab}
            landed[fab] = [entry for folder in folders for f in landed_files(folder) if (entry := _landed(f))]
        return monitor.WindowContext(
            names=test_names(),
            bounds=physical_bounds(),
            catalogues={
                fab: pd.read_parquet(folder / "catalogue.parquet") for fab, folder in references.items()
            },
            references=references,
            landed=landed,
            key_tests=settings.key_test_list(),
            drift=quality.DriftLimits(settings.psi_limit, settings.lot_sigmas, settings.ks_alpha),
            yield_floor=settings.yield_floor,
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

    def _request_retrains(self, window: list[quality.Check]) -> None:
        for request, why in monitor.retrain_requests(window, f"{self.window:%Y-%m-%dT%H:%M}"):
            fab, test = request["fab"], request["test"]
            request_retrain(f"{self.window:%Y-%m-%dT%H%M}_{fab}_{test}", request)
            message = f"drift on {fab} {test}: {why}; retrain requested"
            alert(WORKFLOW, self.task_id, "warning", message, key=f"drift {fab} {test}", **request)


def _landed(path: Path) -> tuple[float, str, str] | None:
    """(upload time, name, sha256) of a landed file; None if it was just set aside."""
    try:
        return path.stat().st_mtime, path.name, content_sha256(path)
    except FileNotFoundError:
        return None
