"""The hourly fab-merge workflow: every fab's wafer-sort dies of an hour, merged into one feature store.

    FabHourDelivered(fab, hour)  external: the fab has delivered the hour, or the deadline passed
    FabHour(fab, hour)           the dies whose last test started in that hour of the fab's own
                                 clock, from the shared per-file conversions (ConvertFile)
    ReferenceStats(fab, date)    per-test median and robust sigma over the fab's previous days
    Normalize(hour)              every fab's dies of the UTC hour: clocks corrected to UTC, test
                                 names and units harmonized, robust z-scores beside raw values
    FeatureStore(hour)           feature_store/{tag}/date=D/hour=HH/fab=F/part-0.parquet
    FabMergeHourly(hour)         the hour as RangeHourly runs it; its summary

`hour` is a UTC hour (luigi's DateHourParameter) everywhere except FabHour, which works in the
fab's recorded clock, so that a clock correction (a new row in the corrections file and a bump
of the normalize version) recomputes Normalize and the store and reuses every FabHour and
every per-file conversion.
The computations are jobs/domain/merge.py's; these tasks only wire them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator
from pathlib import Path
from typing import Any

import luigi
import pandas as pd

from jobs.domain import merge
from jobs.files import read_json
from jobs.ops import damaged, runtime
from jobs.ops.alerts import alert
from jobs.pipeline.convert import ConvertFile, landed_conversions
from jobs.pipeline.landing import is_ready, landed_files, landing_day, landing_folders, note_waiting
from jobs.pipeline.parameters import FabParameter, PlausibleDateHourParameter
from jobs.pipeline.reference import clock_corrections, test_names
from jobs.pipeline.settings import merge as merge_settings
from jobs.pipeline.stages import FabDayStage, StageTask

runtime.install()
WORKFLOW = "fab_merge"
HOUR = dt.timedelta(hours=1)


def hour_partition(hour: dt.datetime) -> str:
    return f"date={hour:%Y-%m-%d}/hour={hour:%H}"


def utc(hour: dt.datetime) -> pd.Timestamp:
    return pd.Timestamp(hour).tz_localize("UTC") if pd.Timestamp(hour).tzinfo is None else pd.Timestamp(hour)


def folder(target: luigi.LocalTarget) -> Path:
    """The stage folder of an input (the target is its manifest)."""
    return Path(target.path).parent


# --- has a fab delivered an hour? -------------------------------------------------------------


def delivered(fab: str, hour: dt.datetime) -> bool:
    """The fab has delivered `hour` (UTC) when its day is _READY, or when it has uploaded a file of
    that day after the hour ended (testers deliver in time order: a later upload means the hour
    is done). Other days' folders are no evidence: they may hold late final-test files."""
    if is_ready(fab, hour.date()):
        return True
    folder, end = landing_day(fab, hour.date()), utc(hour + HOUR).timestamp()
    return folder.exists() and any(f.stat().st_mtime >= end for f in landed_files(folder))


def merge_deadline(hour: dt.datetime) -> pd.Timestamp:
    """Until when the merge of `hour` waits for a fab that has not delivered."""
    return utc(hour + HOUR) + pd.Timedelta(hours=merge_settings().deadline_hours)


def past_deadline(hour: dt.datetime) -> bool:
    return pd.Timestamp.now(tz="UTC") >= merge_deadline(hour)


class FabHourDelivered(luigi.ExternalTask):
    """Before the deadline a fab that has not delivered keeps the merge waiting (luigi re-checks
    external tasks with [worker] retry_external_tasks); after it, the merge goes on without it."""

    fab = FabParameter(merge_settings)
    hour = PlausibleDateHourParameter()

    def complete(self) -> bool:
        if delivered(self.fab, self.hour) or past_deadline(self.hour):
            return True
        what = f"{self.fab}'s hour {self.hour:%Y-%m-%d %H}:00"
        note_waiting(self, what, merge_deadline(self.hour), f"the hour is merged without {self.fab}")
        return False


class HourlyStage(StageTask):
    """A stage with an `hour`; it reopens when a fab that was missing when it ran has delivered."""

    workflow = WORKFLOW
    period_parameter = "hour"
    partition_glob = "date=*/hour=*"
    hour = PlausibleDateHourParameter()

    def partition(self) -> str:
        return hour_partition(self.hour)

    def complete(self) -> bool:
        if not super().complete():
            return False
        missing = self.manifest().get("missing_fabs", [])
        return not any(delivered(fab, self.hour) for fab in missing)


# --- one fab's hour, in its own clock ---------------------------------------------------------


class FabHour(HourlyStage):
    """`fab_hour/{tag}/date=D/hour=HH/fab=F/`: dies.parquet (with the recorded test start),
    results.parquet (PTR) and tests.parquet (each source file's catalogue)."""

    stage = "fab_hour"
    reads = (ConvertFile,)
    fab = FabParameter(merge_settings)

    def partition(self) -> str:
        return f"{hour_partition(self.hour)}/fab={self.fab}"

    def complete(self) -> bool:
        if not StageTask.complete(self):
            return False
        return not (self.manifest()["status"] == "missing" and delivered(self.fab, self.hour))

    def requires(self) -> FabHourDelivered:
        return FabHourDelivered(fab=self.fab, hour=self.hour)

    def candidates(self) -> list[Path]:
        """Files that can hold dies of this hour: landed from the day before to the day after,
        uploaded at most a day before the hour (clocks may be off UTC by hours, not days)."""
        earliest = utc(self.hour).timestamp() - 86_400
        day = dt.timedelta(days=1)
        folders = landing_folders(self.fab, self.hour.date() - day, self.hour.date() + day)
        return [f for folder in folders for f in landed_files(folder) if f.stat().st_mtime >= earliest]

    def run(self) -> Generator[list[ConvertFile], Any, None]:
        status = "delivered" if delivered(self.fab, self.hour) else "missing"
        files = self.candidates()
        conversions = yield from landed_conversions(files)
        self.set_status_message(f"selecting the dies of {self.hour:%Y-%m-%d %H}:00 from {len(files)} files")
        landed = [(c.path, c.manifest) for c in conversions]
        readable, quarantined = damaged.sort_landed(WORKFLOW, self.task_id, self.fab, landed)
        kept = {path for path, _ in readable}
        dies, results, tests, unreadable = merge.hour_of_files(
            [c for c in conversions if c.path in kept], utc(self.hour)
        )
        unreadable += [q["moved_to"] for q in quarantined]
        with self.publish() as (work, manifest):
            dies.to_parquet(work / "dies.parquet", index=False)
            results.to_parquet(work / "results.parquet", index=False)
            tests.to_parquet(work / "tests.parquet", index=False)
            manifest.update(status=status, files=int(dies["source_sha256"].nunique()), unreadable=unreadable)
            manifest["rows"] = {"dies": len(dies), "results": len(results)}


# --- the reference of robust z-scores --------------------------------------------------------------


class ReferenceStats(FabDayStage):
    """`reference/{tag}/date=D/fab=F/stats.parquet`: per canonical test, the median and robust sigma
    of the fab's wafer-sort results over the `reference_days` days before D (D itself when the
    fab has no earlier day: its first day is its own reference)."""

    stage = "reference"
    reads = (ConvertFile,)
    workflow = WORKFLOW

    def folders(self) -> list[Path]:
        first = self.date - dt.timedelta(days=merge_settings().reference_days)
        earlier = landing_folders(self.fab, first, self.date - dt.timedelta(days=1))
        return earlier or landing_folders(self.fab, self.date, self.date)

    def run(self) -> Generator[list[ConvertFile], Any, None]:
        folders = self.folders()
        conversions = yield from landed_conversions([f for folder in folders for f in landed_files(folder)])
        self.set_status_message(f"reference of {self.fab} over {len(folders)} day(s)")
        stats, files = merge.reference_stats(conversions, self.fab, test_names())
        with self.publish() as (work, manifest):
            stats.to_parquet(work / "stats.parquet", index=False)
            manifest.update(days=[f.name for f in folders], files=files, rows={"tests": len(stats)})


# --- the UTC hour of every fab ---------------------------------------------------------------------


class Normalize(HourlyStage):
    """`normalize/{tag}/date=D/hour=HH/normalized.parquet`: one row per die of every fab whose
    corrected (UTC) test start is in the hour: identifiers, times, and per canonical test its
    value in canonical units and its robust z against the fab's reference."""

    stage = "normalize"
    reads = (FabHour, ReferenceStats)

    def requires(self) -> dict[str, Any]:
        """Per fab, the recorded hours that can hold this UTC hour (the hour itself, and the hour
        shifted by each clock correction of the fab near it) and the fab's reference."""
        fabs = merge_settings().fab_list()
        shifts = {f: merge.fab_hour_offsets(clock_corrections(), f, utc(self.hour)) for f in fabs}
        return {
            "wait": [FabHourDelivered(fab=f, hour=self.hour) for f in fabs],
            "fab_hours": {
                f: [FabHour(fab=f, hour=self.hour + dt.timedelta(hours=h)) for h in hours]
                for f, hours in shifts.items()
            },
            "reference": {f: ReferenceStats(fab=f, date=self.hour.date()) for f in fabs},
        }

    def run(self) -> None:
        fabs = merge_settings().fab_list()
        missing = [f for f in fabs if not delivered(f, self.hour)]
        inputs = self.input()
        present = [f for f in fabs if f not in missing]
        self.set_status_message(f"normalizing {', '.join(present)}")
        table = merge.normalize_hour(
            {fab: [folder(t) for t in inputs["fab_hours"][fab]] for fab in present},
            {fab: pd.read_parquet(folder(inputs["reference"][fab]) / "stats.parquet") for fab in present},
            utc(self.hour),
            test_names(),
            clock_corrections(),
        )
        with self.publish() as (work, manifest):
            table.to_parquet(work / "normalized.parquet", index=False)
            rows = table.groupby("fab").size().to_dict() if len(table) else {}
            manifest.update(fabs=present, missing_fabs=missing, rows=rows)
        for fab in missing:
            late = f"{fab} had not delivered {self.hour:%Y-%m-%d %H}:00 by the deadline: merged without it"
            alert(
                WORKFLOW, self.task_id, "warning", late, key=f"{fab} missing", hour=f"{self.hour:%Y-%m-%dT%H}"
            )


# --- the feature store -----------------------------------------------------------------------------


class FeatureStore(HourlyStage):
    """`feature_store/{tag}/date=D/hour=HH/fab=F/part-0.parquet`, one file per fab that delivered
    (empty when it tested nothing that hour); `_manifest.json` beside them."""

    stage = "feature_store"
    reads = (Normalize,)
    manifest_name = "_manifest.json"

    def requires(self) -> Normalize:
        return Normalize(hour=self.hour)

    def run(self) -> None:
        normalized = read_json(Path(self.input().path))
        table = pd.read_parquet(folder(self.input()) / "normalized.parquet")
        tables = merge.store_tables(table, normalized["fabs"], test_names())
        with self.publish() as (work, manifest):
            for fab, rows in tables.items():
                (work / f"fab={fab}").mkdir()
                rows.to_parquet(work / f"fab={fab}" / "part-0.parquet", index=False)
            manifest.update(
                fabs=normalized["fabs"], missing_fabs=normalized["missing_fabs"], rows=normalized["rows"]
            )


class FabMergeHourly(HourlyStage):
    """The hour as RangeHourly runs it; `fab_merge_hourly/{tag}/date=D/hour=HH/manifest.json`."""

    stage = "merge"
    folder_name = "fab_merge_hourly"
    reads = (FeatureStore,)

    def requires(self) -> FeatureStore:
        return FeatureStore(hour=self.hour)

    def run(self) -> None:
        store = read_json(Path(self.input().path))
        with self.publish() as (_, manifest):
            manifest.update(fabs=store["fabs"], missing_fabs=store["missing_fabs"], rows=store["rows"])
