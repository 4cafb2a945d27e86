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

STDF records times per wafer (WIR/WRR, MIR/MRR), not per die: a die's test start is placed
between its file's start and finish in the order its parts were tested.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi
import numpy as np
import pandas as pd

from jobs.domain import features as feats
from jobs.domain import harmonize
from jobs.files import read_json
from jobs.ops import runtime
from jobs.ops.alerts import alert
from jobs.pipeline.convert import ConvertFile, converted_folder
from jobs.pipeline.landing import (
    is_ready,
    landed_files,
    landing_day,
    landing_folders,
    note_waiting,
    still_landed,
)
from jobs.pipeline.settings import merge as merge_settings
from jobs.pipeline.settings import repo_file
from jobs.pipeline.stages import FabDayStage, StageTask

runtime.install()
WORKFLOW = "fab_merge"
HOUR = dt.timedelta(hours=1)
DIE_COLUMNS = [*feats.FEATURE_KEY, "part_key", "retest", "passed", "hard_bin", "soft_bin", "test_time_ms"]


def hour_partition(hour: dt.datetime) -> str:
    return f"date={hour:%Y-%m-%d}/hour={hour:%H}"


def utc(hour: dt.datetime) -> pd.Timestamp:
    return pd.Timestamp(hour).tz_localize("UTC") if pd.Timestamp(hour).tzinfo is None else pd.Timestamp(hour)


@functools.cache
def _test_names(path: str, mtime: float) -> pd.DataFrame:
    return harmonize.read_test_names(Path(path))


@functools.cache
def _corrections(path: str, mtime: float) -> pd.DataFrame:
    return harmonize.read_corrections(Path(path))


def test_names() -> pd.DataFrame:
    path = repo_file(merge_settings().test_names)
    return _test_names(str(path), path.stat().st_mtime)


def clock_corrections() -> pd.DataFrame:
    path = repo_file(merge_settings().clock_corrections)
    return _corrections(str(path), path.stat().st_mtime)


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

    fab = luigi.Parameter()
    hour = luigi.DateHourParameter()

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
    hour = luigi.DateHourParameter()

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
    fab = luigi.Parameter()

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

    def run(self) -> Iterator[list[ConvertFile]]:
        status = "delivered" if delivered(self.fab, self.hour) else "missing"
        files = self.candidates()
        targets = yield [ConvertFile(path=str(f)) for f in files]
        self.set_status_message(f"selecting the dies of {self.hour:%Y-%m-%d %H}:00 from {len(files)} files")
        conversions = [read_json(Path(t.path)) for _, t in still_landed(files, targets)]
        dies, results, tests, unreadable = hour_of_files(conversions, utc(self.hour))
        with self.publish() as (work, manifest):
            dies.to_parquet(work / "dies.parquet", index=False)
            results.to_parquet(work / "results.parquet", index=False)
            tests.to_parquet(work / "tests.parquet", index=False)
            manifest.update(status=status, files=int(dies["source_sha256"].nunique()), unreadable=unreadable)
            manifest["rows"] = {"dies": len(dies), "results": len(results)}


def hour_of_files(conversions: list[dict], start: pd.Timestamp) -> tuple[pd.DataFrame, ...]:
    """The dies (last test of each die) whose recorded test start is in [start, start + 1 h),
    their PTR results and their files' test catalogues. Resent files (same sha256) count once."""
    dies, results, tests, unreadable = [], [], [], []
    seen: set[str] = set()
    for conversion in conversions:
        if conversion.get("status", "ok") != "ok":
            unreadable.append(conversion["input"]["path"])
            continue
        sha, facts = conversion["input"]["sha256"], conversion["file"]
        if sha in seen or not facts["wafers"] or not overlaps(facts, start):
            continue
        seen.add(sha)
        folder = converted_folder(sha)
        parts = pd.read_parquet(folder / "parts.parquet")
        parts["recorded_start"] = part_starts(parts, facts)
        last = final_tests(parts)
        mine = last[(last["recorded_start"] >= start) & (last["recorded_start"] < start + pd.Timedelta(HOUR))]
        if mine.empty:
            continue
        ptr = ptr_results(folder, mine["part_index"])
        dies.append(mine.assign(source_sha256=sha))
        results.append(ptr.assign(source_sha256=sha))
        catalogue = pd.read_parquet(folder / "tests.parquet", columns=["test_num", "test_txt", "units"])
        tests.append(catalogue.assign(source_sha256=sha))
    return _concat(dies, DIE_FRAME), _concat(results, RESULT_FRAME), _concat(tests, TEST_FRAME), unreadable


DIE_FRAME = {
    "part_index": "int32", "lot_id": "str", "wafer_id": "str", "x_coord": "int16", "y_coord": "int16",
    "retest": "int16", "passed": "bool", "hard_bin": "float64", "soft_bin": "float64",
    "test_time_ms": "float64", "recorded_start": "datetime64[ns, UTC]", "source_sha256": "str",
}  # fmt: skip
RESULT_FRAME = {"part_index": "int32", "test_num": "uint32", "result": "float32", "source_sha256": "str"}
TEST_FRAME = {"test_num": "uint32", "test_txt": "str", "units": "str", "source_sha256": "str"}


def _concat(frames: list[pd.DataFrame], empty: dict[str, str]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in empty.items()})
    return pd.concat(frames, ignore_index=True)[list(empty)]


def overlaps(facts: dict[str, Any], start: pd.Timestamp) -> bool:
    """Whether a file's recorded test period [start, finish] meets the hour."""
    first, last = pd.Timestamp(facts["start_time_utc"]), pd.Timestamp(facts["finish_time_utc"])
    return first < start + pd.Timedelta(HOUR) and last >= start


def part_starts(parts: pd.DataFrame, facts: dict[str, Any]) -> pd.Series:
    """Each part's estimated test start: spread over the file's recorded test period in the
    order the parts were tested (STDF keeps times per wafer, not per part)."""
    first, last = pd.Timestamp(facts["start_time_utc"]), pd.Timestamp(facts["finish_time_utc"])
    order = parts["part_index"].rank(method="first").to_numpy() - 1
    share = order / max(len(parts), 1)
    return pd.Series(first + (last - first) * share, index=parts.index)


def ptr_results(folder: Path, parts: pd.Series) -> pd.DataFrame:
    """A converted file's PTR results of the given parts: part_index, test_num, result."""
    results = pd.read_parquet(
        folder / "results.parquet", columns=["part_index", "kind", "test_num", "result"]
    )
    return results[(results["kind"] == "PTR") & results["part_index"].isin(parts)].drop(columns="kind")


def final_tests(parts: pd.DataFrame) -> pd.DataFrame:
    """Each die's last test (the highest retest index): in the store, the last test wins."""
    placed = parts.dropna(subset=["x_coord", "y_coord"])
    return placed.sort_values(["retest", "part_index"]).drop_duplicates(feats.FEATURE_KEY, keep="last")


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

    def run(self) -> Iterator[list[ConvertFile]]:
        folders = self.folders()
        files = [f for folder in folders for f in landed_files(folder)]
        targets = yield [ConvertFile(path=str(f)) for f in files]
        self.set_status_message(f"reference of {self.fab} over {len(folders)} day(s)")
        converted = (read_json(Path(t.path)) for _, t in still_landed(files, targets))
        conversions = {c["input"]["sha256"]: c for c in converted}  # a resent file: once
        longs = [
            harmonized_file(converted_folder(sha), self.fab)
            for sha, c in conversions.items()
            if c.get("status", "ok") == "ok" and c["file"]["wafers"]
        ]
        long = pd.concat(longs, ignore_index=True) if longs else pd.DataFrame({"test": [], "value": []})
        stats = harmonize.robust_stats(long)
        with self.publish() as (work, manifest):
            stats.to_parquet(work / "stats.parquet", index=False)
            manifest.update(days=[f.name for f in folders], files=len(longs), rows={"tests": len(stats)})


def harmonized_file(folder: Path, fab: str) -> pd.DataFrame:
    """A converted file's final-test PTR results in canonical names and units."""
    parts = pd.read_parquet(folder / "parts.parquet", columns=["part_index", *feats.FEATURE_KEY, "retest"])
    results = ptr_results(folder, final_tests(parts)["part_index"])
    catalogue = pd.read_parquet(folder / "tests.parquet", columns=["test_num", "test_txt", "units"])
    return harmonize.harmonize(
        results.rename(columns={"part_index": "part_key"}), catalogue, fab, test_names()
    )


# --- the UTC hour of every fab ---------------------------------------------------------------------


class Normalize(HourlyStage):
    """`normalize/{tag}/date=D/hour=HH/normalized.parquet`: one row per die of every fab whose
    corrected (UTC) test start is in the hour: identifiers, times, and per canonical test its
    value in canonical units and its robust z against the fab's reference."""

    stage = "normalize"
    reads = (FabHour, ReferenceStats)

    def fab_hours(self) -> list[FabHour]:
        """The recorded hours that can hold this UTC hour: the hour itself, and the hour shifted
        by each clock correction of the fab near it."""
        near = (utc(self.hour) - pd.Timedelta(days=1), utc(self.hour) + pd.Timedelta(days=1))
        hours = []
        for fab in merge_settings().fab_list():
            for offset in sorted(harmonize.clock_offsets(clock_corrections(), fab, *near)):
                hours.append(FabHour(fab=fab, hour=self.hour + dt.timedelta(hours=offset)))
        return hours

    def requires(self) -> dict[str, Any]:
        fabs = merge_settings().fab_list()
        return {
            "wait": [FabHourDelivered(fab=f, hour=self.hour) for f in fabs],
            "fab_hours": self.fab_hours(),
            "reference": [ReferenceStats(fab=f, date=self.hour.date()) for f in fabs],
        }

    def run(self) -> None:
        fabs = merge_settings().fab_list()
        missing = [f for f in fabs if not delivered(f, self.hour)]
        frames = []
        for fab in (f for f in fabs if f not in missing):
            self.set_status_message(f"normalizing {fab}")
            hours = [h for h in self.fab_hours() if h.fab == fab]
            stats = pd.read_parquet(ReferenceStats(fab=fab, date=self.hour.date()).folder() / "stats.parquet")
            frames.append(normalize_fab(fab, [h.folder() for h in hours], utc(self.hour), stats))
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        with self.publish() as (work, manifest):
            table.to_parquet(work / "normalized.parquet", index=False)
            rows = table.groupby("fab").size().to_dict() if len(table) else {}
            manifest.update(fabs=[f for f in fabs if f not in missing], missing_fabs=missing, rows=rows)
        for fab in missing:
            late = f"{fab} had not delivered {self.hour:%Y-%m-%d %H}:00 by the deadline: merged without it"
            alert(
                WORKFLOW, self.task_id, "warning", late, key=f"{fab} missing", hour=f"{self.hour:%Y-%m-%dT%H}"
            )


def normalize_fab(fab: str, folders: list[Path], start: pd.Timestamp, stats: pd.DataFrame) -> pd.DataFrame:
    """One fab's dies of the UTC hour starting at `start`, from its FabHour folders."""
    dies = pd.concat([pd.read_parquet(f / "dies.parquet") for f in folders], ignore_index=True)
    dies["test_start_utc"] = harmonize.to_utc(clock_corrections(), fab, dies["recorded_start"])
    inside = (dies["test_start_utc"] >= start) & (dies["test_start_utc"] < start + pd.Timedelta(HOUR))
    dies = dies[inside].reset_index(drop=True)
    dies["part_key"] = np.arange(len(dies), dtype=np.int64)
    values = [_harmonized(dies, folder, fab) for folder in folders]
    long = (
        pd.concat(values, ignore_index=True)
        if values
        else pd.DataFrame(columns=["part_key", "test", "value"])
    )
    long["z"] = harmonize.zscores(long, stats)
    wide = long.pivot_table(index="part_key", columns="test", values=["value", "z"], aggfunc="last")
    columns = {}
    for test in harmonize.canonical_tests(test_names()):
        columns[test] = wide["value"][test] if ("value", test) in wide.columns else np.nan
        columns[f"{test}_z"] = wide["z"][test] if ("z", test) in wide.columns else np.nan
    measured = pd.DataFrame(columns, index=wide.index).reindex(dies["part_key"])
    out = dies[[*DIE_COLUMNS, "recorded_start", "test_start_utc", "source_sha256"]].assign(fab=fab)
    return pd.concat([out.reset_index(drop=True), measured.reset_index(drop=True).astype("float32")], axis=1)


def _harmonized(dies: pd.DataFrame, folder: Path, fab: str) -> pd.DataFrame:
    """The PTR results of `dies` found in one FabHour folder, harmonized file by file."""
    results = pd.read_parquet(folder / "results.parquet")
    catalogue = pd.read_parquet(folder / "tests.parquet")
    keys = dies[["source_sha256", "part_index", "part_key"]]
    joined = results.merge(keys, on=["source_sha256", "part_index"])
    frames = [
        harmonize.harmonize(group, catalogue[catalogue["source_sha256"] == sha], fab, test_names())
        for sha, group in joined.groupby("source_sha256")
    ]
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["part_key", "test", "value"])
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
        normalized = Normalize(hour=self.hour)
        table = pd.read_parquet(normalized.folder() / "normalized.parquet")
        fabs, missing = normalized.manifest()["fabs"], normalized.manifest()["missing_fabs"]
        with self.publish() as (work, manifest):
            for fab in fabs:
                rows = table[table["fab"] == fab].drop(columns=["fab"]) if len(table) else store_frame()
                (work / f"fab={fab}").mkdir()
                rows.to_parquet(work / f"fab={fab}" / "part-0.parquet", index=False)
            manifest.update(fabs=fabs, missing_fabs=missing, rows=normalized.manifest()["rows"])


def store_frame() -> pd.DataFrame:
    """An empty store table with the columns every fab's file has."""
    columns = {c: pd.Series(dtype=t) for c, t in DIE_FRAME.items() if c in DIE_COLUMNS}
    columns |= {
        "part_key": pd.Series(dtype="int64"),
        "recorded_start": pd.Series(dtype="datetime64[ns, UTC]"),
    }
    columns |= {
        "test_start_utc": pd.Series(dtype="datetime64[ns, UTC]"),
        "source_sha256": pd.Series(dtype="str"),
    }
    for test in harmonize.canonical_tests(test_names()):
        columns |= {test: pd.Series(dtype="float32"), f"{test}_z": pd.Series(dtype="float32")}
    return pd.DataFrame(columns)


class FabMergeHourly(HourlyStage):
    """The hour as RangeHourly runs it; `fab_merge_hourly/{tag}/date=D/hour=HH/manifest.json`."""

    stage = "merge"
    folder_name = "fab_merge_hourly"
    reads = (FeatureStore,)

    def requires(self) -> FeatureStore:
        return FeatureStore(hour=self.hour)

    def run(self) -> None:
        store = FeatureStore(hour=self.hour).manifest()
        with self.publish() as (_, manifest):
            manifest.update(fabs=store["fabs"], missing_fabs=store["missing_fabs"], rows=store["rows"])
