"""The daily wafer-yield workflow: landing zone -> checked Parquet -> features -> model -> forecasts.

    FabDayLanded(fab, date)   the landing day is _READY, or its deadline has passed (= offline)
    IngestFab(fab, date)      every file of the fab's day converted once (ConvertFile), bad files
                              quarantined, resent files read once; wafer-sort dies (their
                              results stay in the conversions) and the final-test units that
                              landed that day as Parquet
    QualityGate(date)         jobs/domain/quality.py over every fab: a failed gate stops training
    Features(date)            die features (jobs/domain/features.py), all fabs of the day
    Train(date)               a candidate on the labelled trailing window (jobs/domain/model.py)
    Deploy(date)              the candidate registered in MLflow, and its validation started:
    ValidateCandidate(version)  any registered version on the newest labelled day and replayed
                              on the last scored days beside the champion: won or lost
    Approval(version)         a person's approval of a winner (scripts/models approve)
    Lifecycle(date)           the day's serving plan: rollback check, rollout 10/50/100%, new
                              challengers (jobs/domain/lifecycle.py), mirrored into the registry
    Score(date)               p_fail per die as the plan serves it, shadow scores, wafer forecasts
    YieldReport(date)         wafer maps, Paretos, Cpk, retests and exports: one HTML page
    WaferYieldDaily(date)     the day's summary: what was decided and why

Run by the schedule for yesterday, or over a range with RangeDaily (see README). Labels (final
test) arrive a day after wafer sort, so Train(date) learns from days before `date` and only
from final-test files that had landed by `date`: a backfill decides exactly what the nightly
run decided. Decisions (offline, quarantine, skip, keep) are output files, never exceptions.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Generator, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import luigi
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jobs import __version__
from jobs.domain import decisions, ingest, lifecycle, quality, registry, report_page
from jobs.domain import features as feats
from jobs.domain import model as yield_model
from jobs.domain import yield_views as views
from jobs.domain.model import ModelIntegrityError
from jobs.files import grant_group_read, read_json, write_json
from jobs.ops import damaged, runtime
from jobs.ops.alerts import alert
from jobs.pipeline.convert import ConvertFile, converted_folder, landed_conversions
from jobs.pipeline.landing import is_ready, landed_files, landing_day, note_waiting
from jobs.pipeline.parameters import FabParameter, PlausibleDateParameter, RegisteredVersionParameter
from jobs.pipeline.requests import consume, open_retrain_requests
from jobs.pipeline.settings import (
    models,
    paths,
    quality_gate,
    quality_monitor,
    wafer_yield,
    yield_model_settings,
)
from jobs.pipeline.stages import StageTask

runtime.install()
WORKFLOW = "wafer_yield"


# --- the landing zone ---------------------------------------------------------------------------


def landing_deadline(date: dt.date) -> dt.datetime:
    """When a fab's day counts as offline if it has no _READY marker."""
    end_of_day = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return end_of_day + dt.timedelta(hours=wafer_yield().landing_deadline_hours)


def in_history(date: dt.date) -> bool:
    """Whether the floor existed on `date`: some fab landed something, or it was ingested."""
    return any(landing_day(fab, date).exists() for fab in wafer_yield().fab_list()) or any(
        IngestFab(fab=fab, date=date).folder().exists() for fab in wafer_yield().fab_list()
    )


def history_days(first: dt.date, last: dt.date) -> list[dt.date]:
    days = (first + dt.timedelta(days=i) for i in range((last - first).days + 1))
    return [d for d in days if in_history(d)]


def previous_history_day(date: dt.date) -> dt.date | None:
    days = history_days(date - dt.timedelta(days=wafer_yield().backtest_days), date - dt.timedelta(days=1))
    return days[-1] if days else None


class DailyStage(StageTask):
    """A stage with a `date`; reopens (becomes incomplete) when a fab that was offline when it
    ran has delivered since, so the next run of the day includes the late fab."""

    workflow = WORKFLOW
    date = PlausibleDateParameter()

    def partition(self) -> str:
        return f"date={self.date:%Y-%m-%d}"

    def complete(self) -> bool:
        if not super().complete():
            return False
        offline = self.manifest().get("offline_fabs", [])
        return not any(is_ready(fab, self.date) for fab in offline)

    def fabs(self) -> list[str]:
        return wafer_yield().fab_list()

    def ingests(self) -> list[IngestFab]:
        return [IngestFab(fab=fab, date=self.date) for fab in self.fabs()]


# --- ingest -------------------------------------------------------------------------------------


class FabDayLanded(luigi.ExternalTask):
    """A fab's landing day is there (_READY), or its deadline has passed and it counts as offline.
    Before the deadline a missing day keeps everything downstream waiting."""

    fab = FabParameter(wafer_yield)
    date = PlausibleDateParameter()

    def complete(self) -> bool:
        if is_ready(self.fab, self.date) or dt.datetime.now(dt.UTC) >= landing_deadline(self.date):
            return True
        what = f"{self.fab}'s {self.date} (_READY in {landing_day(self.fab, self.date)})"
        note_waiting(self, what, landing_deadline(self.date), f"the day goes on without {self.fab}")
        return False


class IngestFab(DailyStage):
    """`ingest/{tag}/date=D/fab=F/`: dies.parquet (wafer sort; the manifest gives each file's
    part_key offset into its conversion's results) and final_test.parquet (the final-test units
    that landed that day), or an offline record."""

    stage = "ingest"
    folder_name = "ingest"
    reads = (ConvertFile,)
    fab = FabParameter(wafer_yield)

    def partition(self) -> str:
        return f"date={self.date:%Y-%m-%d}/fab={self.fab}"

    def complete(self) -> bool:
        if not StageTask.complete(self):
            return False
        return not (self.manifest()["status"] == "offline" and is_ready(self.fab, self.date))

    def requires(self) -> FabDayLanded:
        return FabDayLanded(fab=self.fab, date=self.date)

    def run(self) -> Generator[list[ConvertFile], Any, None]:
        if not is_ready(self.fab, self.date):
            self._record_offline()
            return
        files = landed_files(landing_day(self.fab, self.date))
        self.set_status_message(f"converting {len(files)} files")
        conversions = yield from landed_conversions(files)  # in parallel, once per content
        landed = [(c.path, c.manifest) for c in conversions]
        readable, quarantined = damaged.sort_landed(WORKFLOW, self.task_id, self.fab, landed)
        kept = {path for path, _ in readable}
        readable_conversions = [c for c in conversions if c.path in kept]
        self.set_status_message(f"combining {len(readable_conversions)} conversions")
        with self.publish(inputs=sorted(kept)) as (work, manifest):
            manifest.update(status="ok", **ingest.combine_day(readable_conversions, work))
            manifest["quarantined"] = quarantined
        self.set_progress_percentage(100)

    def _record_offline(self) -> None:
        deadline = landing_deadline(self.date).isoformat(timespec="minutes")
        with self.publish() as (_, manifest):
            manifest.update(status="offline", deadline_utc=deadline, rows={"dies": 0, "results": 0})
        alert(
            WORKFLOW,
            self.task_id,
            "error",
            f"{self.fab} offline on {self.date}: no _READY by {deadline}; the day goes on without it",
            key=f"{self.fab} offline",
            fab=self.fab,
            date=str(self.date),
        )


def read_ingest(fab: str, date: dt.date) -> dict[str, Any]:
    """A fab-day's ingest: its manifest, dies and wafer-sort result sources (the conversions)."""
    folder = IngestFab(fab=fab, date=date).folder()
    manifest = read_json(folder / "manifest.json")
    sources = ingest.result_sources(manifest, converted_folder)
    return {"ingest": manifest, "dies": pd.read_parquet(folder / "dies.parquet"), "sources": sources}


def present_fabs(date: dt.date) -> tuple[list[str], list[str]]:
    """(fabs ingested on `date`, fabs offline on `date`), from the ingest manifests."""
    present, offline = [], []
    for fab in wafer_yield().fab_list():
        status = IngestFab(fab=fab, date=date).manifest()["status"]
        (offline if status == "offline" else present).append(fab)
    return present, offline


# --- quality and features -------------------------------------------------------------------------


class QualityGate(DailyStage):
    """`quality/{tag}/date=D/report.json`: every check of jobs/domain/quality.py over the day's fabs."""

    stage = "quality"
    reads = (IngestFab,)

    def requires(self) -> list[IngestFab]:
        return self.ingests()

    def run(self) -> None:
        present, offline = present_fabs(self.date)
        tables = {}
        for i, fab in enumerate(present):
            self.set_status_message(f"checking {fab}")
            tables[fab] = quality.fab_tables(**read_ingest(fab, self.date))
            self.set_progress_percentage(90 * (i + 1) // len(present))
        settings = quality_gate()
        limits = quality.Thresholds(**{f.name: getattr(settings, f.name) for f in fields(quality.Thresholds)})
        report = quality.gate(tables, limits)
        with self.publish() as (work, manifest):
            write_json(work / "report.json", report)
            manifest.update(passed=report["passed"], failed=report["failed"], warnings=report["warnings"])
            manifest.update(fabs=present, offline_fabs=offline)
        if not report["passed"]:
            failed = quality.failures(report)
            alert(
                WORKFLOW,
                self.task_id,
                "error",
                f"quality gate failed on {self.date}: {failed}",
                key="quality gate",
            )


class Features(DailyStage):
    """`features/{tag}/date=D/features.parquet`: one row per wafer-sort die of every fab present."""

    stage = "features"
    reads = (IngestFab,)

    def requires(self) -> list[IngestFab]:
        return self.ingests()

    def run(self) -> None:
        present, offline = present_fabs(self.date)
        with self.publish() as (work, manifest):
            rows = feats.write_day(self.fab_tables(present), work / "features.parquet")
            manifest.update(fabs=present, offline_fabs=offline, rows={"dies": sum(rows.values()), **rows})

    def fab_tables(self, fabs: list[str]) -> Iterator[pa.Table]:
        """Each fab's features in turn (one fab's in memory at a time)."""
        for i, fab in enumerate(fabs):
            self.set_status_message(f"features of {fab}")
            day = read_ingest(fab, self.date)
            yield feats.fab_features(day["dies"], day["sources"], fab=fab)
            self.set_progress_percentage(100 * (i + 1) // len(fabs))


def features_path(date: dt.date) -> Path:
    return Features(date=date).folder() / "features.parquet"


def read_features(date: dt.date, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The day's feature table (every column, or `columns`: see feats.read_table) with its `date`."""
    frame = feats.read_table(features_path(date), columns)
    frame["date"] = date
    return frame


def labels_landed(first: dt.date, last: dt.date) -> pd.DataFrame:
    """Every final-test unit that landed from `first` to `last` (any fab), as labels."""
    frames = []
    for day in history_days(first, last):
        for fab in wafer_yield().fab_list():
            path = IngestFab(fab=fab, date=day).folder() / "final_test.parquet"
            if path.exists():
                frames.append(pd.read_parquet(path))
    if not frames:
        return feats.empty_labels()
    # a unit resent on a later day counts once, with its latest result
    return pd.concat(frames, ignore_index=True).drop_duplicates(feats.FEATURE_KEY, keep="last")


def labelled_days(
    days: list[dt.date], known_by: dt.date, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Features of `days` (every column, or `columns` and the die keys) with the labels that had
    landed by `known_by` (null: not yet known). The index is each row's position in the days'
    files, one after the other (window_rows reads more columns of chosen rows by it)."""
    if not days:
        return pd.DataFrame()
    wanted = None if columns is None else list(dict.fromkeys([*feats.FEATURE_KEY, *columns]))
    frame = pd.concat([read_features(d, wanted) for d in days], ignore_index=True)
    return feats.join_labels(frame, labels_landed(days[0] + dt.timedelta(days=1), known_by))


def window_tests(days: list[dt.date]) -> list[str]:
    """The `p_*` columns of the days' feature tables, in the order labelled_days(days) has them."""
    names = (pq.read_schema(features_path(d)).names for d in days)
    return list(dict.fromkeys(c for day in names for c in day if c.startswith(feats.TEST_PREFIX)))


def window_rows(days: list[dt.date], positions: pd.Index, columns: Sequence[str]) -> pd.DataFrame:
    """`columns` of the rows of labelled_days(days) at `positions` (its index), in that order,
    each day's file read a batch at a time (feats.read_rows): a few columns of every row, or
    every test of a few rows, never the whole wide table."""
    wanted = np.asarray(positions)
    return pd.concat(_rows_by_day(days, np.sort(wanted), columns)).loc[wanted]


def _rows_by_day(
    days: list[dt.date], positions: np.ndarray, columns: Sequence[str]
) -> Iterator[pd.DataFrame]:
    start = 0
    for day in days:
        path = features_path(day)
        end = start + pq.ParquetFile(path).metadata.num_rows
        rows = positions[(positions >= start) & (positions < end)]
        if len(rows):
            yield feats.read_rows(path, rows - start, columns).set_axis(pd.Index(rows))
        start = end


# --- model -----------------------------------------------------------------------------------------


def share_with_group(path: Path) -> None:
    """[yield_model] group_readable: a model folder or the local registry readable by the group."""
    if yield_model_settings().group_readable and path.exists():
        grant_group_read(path, paths().root_path())


def store() -> registry.Store:
    return models().store()


def scratch() -> Path:
    """Where registered model files are fetched to be checked and loaded (then removed)."""
    return paths().root_path() / "registry" / "scratch"


# What Train reads of every window row; the tests' results it reads only where it needs them.
WINDOW_COLUMNS = [*feats.DIE_COLUMNS, *yield_model.model_features([])]


def selected_tests(days: list[dt.date], train: pd.DataFrame, params: yield_model.ModelParams) -> list[str]:
    """model.select_tests on `train` (rows of labelled_days(days)) as if it held every `p_*`
    column, reading the tests' results of only the rows it ranks them on: the same tests."""
    tests = window_tests(days)
    rows = yield_model.selection_rows(yield_model.labelled(train, []), len(tests), params.seed)
    results = window_rows(days, rows.index, tests).assign(ft_failed=rows["ft_failed"].to_numpy())
    return yield_model.rank_tests(results, tests, params.k_tests)


class Train(DailyStage):
    """`models/{tag}/date=D/`: a candidate trained on the labelled trailing window, or the
    reason there is none (quality gate, insufficient data)."""

    stage = "train"
    folder_name = "models"
    reads = (QualityGate, Features)
    resources = {"training": 1}  # noqa: RUF012 - luigi's own attribute

    def complete(self) -> bool:  # a decision stands: a late fab does not retrain a past day
        return StageTask.complete(self)

    def window(self) -> list[dt.date]:
        """The window's days before `date` (plus one more: the newest labelled one validates)."""
        days = wafer_yield().train_window_days + 1
        return history_days(self.date - dt.timedelta(days=days), self.date - dt.timedelta(days=1))

    def requires(self) -> dict[str, Any]:
        return {
            "gate": QualityGate(date=self.date),
            "today": Features(date=self.date),
            "window": [Features(date=d) for d in self.window()],
            "labels": self.ingests(),  # final test of the day before lands today
        }

    def run(self) -> None:
        settings = wafer_yield()
        gate = read_json(Path(self.input()["gate"].path))
        new_devices = read_json(Path(self.input()["today"].path))["rows"]["dies"]
        self.set_status_message("loading the labelled window")
        worth_loading = gate["passed"] and new_devices >= settings.min_devices
        days = self.window()
        window = labelled_days(days, self.date, WINDOW_COLUMNS) if worth_loading else pd.DataFrame()
        labelled = window[window["ft_failed"].notna() & window["ws_passed"]] if len(window) else window
        rules = decisions.TrainingRules(settings.min_devices, settings.train_window_days)
        plan = decisions.training_plan(gate["passed"], gate["failed"], new_devices, labelled, rules)
        if plan["status"] == "skipped":
            return self._skip(plan.pop("decision"), **{k: v for k, v in plan.items() if k != "status"})
        train, train_days = plan["train"], plan["train_days"]
        self.set_status_message(f"choosing tests on {len(train)} dies of {len(train_days)} days")
        self.set_progress_percentage(20)
        params = yield_model_settings().model_params()
        selected = selected_tests(days, train, params)
        self.set_status_message(f"training on {len(train)} dies of {len(train_days)} days")
        raw = window_rows(days, train.index, [feats.raw_column(t) for t in selected])
        candidate = yield_model.train_model(train.join(raw), yield_model.model_features(selected), params)
        with self.publish() as (work, manifest):
            saved = yield_model.save_model(candidate, work)
            manifest.update(
                status="trained",
                holdout_day=str(plan["holdout"]),
                train_days=[str(d) for d in train_days],
                rows={"train": len(train), "new_devices": new_devices},
                model=saved,
            )
        share_with_group(self.folder())

    def _skip(self, decision: str, **numbers: Any) -> None:
        with self.publish() as (_, manifest):
            manifest.update(status="skipped", decision=decision, **numbers)
        share_with_group(self.folder())
        alert(
            WORKFLOW,
            self.task_id,
            "warning",
            f"{self.date}: training {decision}",
            key="training skipped",
            **numbers,
        )


def champion_before(date: dt.date) -> lifecycle.Plan:
    """The plan before the first day of the history: the registry's, if it was made before
    `date` (e.g. a model promoted by hand), else empty: a recomputed history must not meet a
    model from its future."""
    with registry.locked(store()):
        last = registry.last_day(store())
        current = registry.aliases(store())
        if (last is not None and last >= str(date)) or registry.CHAMPION not in current:
            return lifecycle.empty_plan()
        champion = registry.version(store(), current[registry.CHAMPION])
    return lifecycle.plan_with_champion(champion["version"], registry.validation_of(champion))


class Deploy(DailyStage):
    """`deploy/{tag}/date=D/decision.json`: the day's candidate registered in the model registry
    (MLflow) and validated (ValidateCandidate), or why there is none."""

    stage = "deploy"
    reads = (Train,)

    def complete(self) -> bool:
        return StageTask.complete(self)

    def requires(self) -> dict[str, Any]:
        previous = previous_history_day(self.date)  # versions are numbered in the order of the days
        return {"train": Train(date=self.date), **({"previous": Deploy(date=previous)} if previous else {})}

    def run(self) -> Generator[Any, Any, None]:
        trained = Train(date=self.date).manifest()
        if trained["status"] != "trained":
            with self.publish() as (work, manifest):
                record = {"decision": trained["decision"], "version": None}
                write_json(work / "decision.json", record)
                manifest.update(record)
            return
        self.set_status_message("registering the candidate")
        tags = {
            "trained_for": str(self.date),
            "trained_by": f"jobs.wafer_yield Train(date={self.date})",
            "holdout_day": trained["holdout_day"],
            "train_days": json.dumps(trained["train_days"]),
            "code_version": __version__,
        }
        with registry.locked(store()):
            number = registry.register(store(), Train(date=self.date).folder(), tags, {})
        share_with_group(scratch().parent)
        validation = yield ValidateCandidate(version=number)
        checked = read_json(Path(validation.path))
        with self.publish() as (work, manifest):
            record = {"version": number, "decision": checked["decision"], "why": checked["why"]}
            write_json(work / "decision.json", record)
            manifest.update(record, model=trained["model"]["sha256"])


class ValidateCandidate(StageTask):
    """`candidates/{tag}/model=M/version=N/validation.json`: a registered version (the nightly's or any
    other with a feature contract) on the newest labelled day and replayed on the last scored
    days beside the champion, and the champion/challenger decision. Recorded in the registry as
    an event that takes effect on the version's day (its `trained_for`, or the day after the
    newest lifecycle day)."""

    stage = "candidate"
    folder_name = "candidates"
    reads = ("Lifecycle", Features)
    workflow = WORKFLOW
    version = RegisteredVersionParameter()

    def partition(self) -> str:
        return f"model={models().model_name()}/version={self.version}"

    def day(self) -> dt.date:
        """The day the version is validated for; its decision takes effect that day."""
        return registry.candidate_day(store(), self.version, dt.datetime.now(dt.UTC).date())

    def replay_days(self) -> list[dt.date]:
        first = self.day() - dt.timedelta(days=models().replay_days)
        return history_days(first, self.day() - dt.timedelta(days=1))

    def requires(self) -> dict[str, Any]:
        day = self.day()
        previous = previous_history_day(day)
        return {
            "replay": [Features(date=d) for d in self.replay_days()],
            "labels": [IngestFab(fab=f, date=day) for f in wafer_yield().fab_list()],
            **({"lifecycle": Lifecycle(date=previous)} if previous else {}),
        }

    def run(self) -> None:
        day, days = self.day(), self.replay_days()
        previous = previous_history_day(day)
        plan = plan_of(previous) if previous else lifecycle.empty_plan()
        self.set_status_message(f"validating version {self.version} for {day}")
        try:
            candidate = registry.load(store(), self.version, scratch())
            champion = plan["champion"] and registry.load(store(), plan["champion"]["version"], scratch())
        except (registry.RegistryError, ModelIntegrityError) as refused:
            return self._decide(day, {"decision": "lost", "why": f"refused: {refused}"}, {})
        models_read = lifecycle.columns_read(m for m in (candidate, champion) if m)
        labelled = labelled_days(days, known_by=day, columns=models_read)
        labelled = (
            labelled[labelled["ft_failed"].notna() & labelled["ws_passed"]] if len(labelled) else labelled
        )
        if not len(labelled):
            return self._decide(day, {"decision": "lost", "why": "no labelled day to validate on"}, {})
        holdout = max(labelled["date"])
        metrics = {
            "holdout_day": str(holdout),
            "replay_days": [str(d) for d in sorted(set(labelled["date"]))],
            "candidate": lifecycle.candidate_metrics(candidate, labelled, holdout),
            "champion": champion and lifecycle.candidate_metrics(champion, labelled, holdout),
        }
        requests = open_retrain_requests(day)
        decision = lifecycle.validation_decision(
            metrics["candidate"], metrics["champion"], [r for _, r in requests], models().rules(wafer_yield())
        )
        consume(requests, day)
        self._decide(day, decision, metrics)

    def _decide(self, day: dt.date, decision: dict[str, Any], metrics: dict[str, Any]) -> None:
        validation = (metrics.get("candidate") or {}).get("holdout", {})
        event = {"action": "validated", "version": self.version, "effective_day": str(day), **decision,
                 "validation": {k: validation.get(k) for k in ("auc", "accuracy", "brier")}}  # fmt: skip
        actions = [event]
        if decision["decision"] == "won" and models().auto_approve:
            actions.append({"action": "approve", "version": self.version, "by": "auto_approve",
                            "effective_day": str(day)})  # fmt: skip
        with registry.locked(store()):
            registry.record_validation(store(), self.version, actions)
        with self.publish() as (work, manifest):
            write_json(work / "validation.json", {**decision, "day": str(day), **metrics})
            manifest.update(decision, day=str(day), version=self.version, **metrics)
        if decision["decision"] == "lost" and "accuracy" in decision["why"]:
            alert(WORKFLOW, self.task_id, "error", f"version {self.version} kept out: {decision['why']}",
                  key="accuracy", version=self.version)  # fmt: skip
        if decision["decision"] == "won" and not models().auto_approve:
            waits = f"version {self.version} waits for approval: {decision['why']}"
            alert(WORKFLOW, self.task_id, "info", waits,
                  key=f"approval {self.version}", version=self.version)  # fmt: skip


class Approval(luigi.ExternalTask):
    """A person's decision on a winning version: `scripts/models approve|reject VERSION --by NAME`
    ([models] auto_approve approves at once). Pending in the visualizer until then, or until
    [models] approval_wait_hours have passed since the version began to wait: a scheduled run
    then ends and the day's summary says who waits; the version stays approvable."""

    version = RegisteredVersionParameter()

    def complete(self) -> bool:
        hours = models().approval_wait_hours
        return registry.decided(store(), self.version) or registry.waited(store(), self.version, hours)


class Lifecycle(DailyStage):
    """`lifecycle/{tag}/date=D/plan.json`: which versions serve day D and with what share, after
    the day's actions (approvals, manual promotions and rollbacks), the automatic rollback check
    and rollout step on the labels that landed on D, and the day's validated candidates
    (jobs/domain/lifecycle.py). Mirrored into the registry unless a later day already was."""

    stage = "lifecycle"
    reads = (Deploy, ValidateCandidate, "Score")

    def complete(self) -> bool:
        return StageTask.complete(self)

    def live_days(self) -> list[dt.date]:
        return history_days(
            self.date - dt.timedelta(days=models().live_days), self.date - dt.timedelta(days=1)
        )

    def requires(self) -> dict[str, Any]:
        previous = previous_history_day(self.date)
        return {
            "deploy": Deploy(date=self.date),
            "labels": self.ingests(),
            "scores": [Score(date=d) for d in self.live_days()],
            **({"previous": Lifecycle(date=previous)} if previous else {}),
        }

    def run(self) -> None:
        day = str(self.date)
        previous = previous_history_day(self.date)
        before = plan_of(previous) if previous else champion_before(self.date)
        live = lifecycle.live_metrics(self.live_predictions(), before)
        with registry.locked(store()):
            actions = registry.actions_for(store(), day)
            plan, happened = lifecycle.day_step(before, actions, live, models().rules(wafer_yield()))
            mirrored = registry.mirror(store(), lifecycle.registry_change(plan, happened, day), day)
        share_with_group(scratch().parent)
        with self.publish() as (work, manifest):
            write_json(work / "plan.json", {"plan": plan, "happened": happened, "live": live})
            manifest.update(lifecycle.summary(plan), happened=happened, live=live, mirrored=mirrored)
        for event in happened:
            if event["action"] in ("rolled back", "rollout stopped", "rollback refused"):
                what = f"{self.date}: {event['action']} v{event.get('version')}: {event['why']}"
                alert(WORKFLOW, self.task_id, "error", what,
                      key=f"lifecycle {event['action']} {event.get('version')}", **event)  # fmt: skip

    def live_predictions(self) -> pd.DataFrame:
        """The earlier days' predictions of dies whose final-test labels landed on this day."""
        labels = labels_landed(self.date, self.date)
        frames = [
            pd.read_parquet(predictions_path(d)) for d in self.live_days() if predictions_path(d).exists()
        ]
        if not frames or not len(labels):
            return pd.DataFrame(columns=[*feats.FEATURE_KEY, "ft_failed", *lifecycle.SERVING_COLUMNS])
        scored = pd.concat(frames, ignore_index=True)
        joined = scored.merge(labels[[*feats.FEATURE_KEY, "ft_failed"]], on=feats.FEATURE_KEY, how="inner")
        return joined[joined["ft_failed"].notna()]


def plan_of(date: dt.date) -> lifecycle.Plan:
    """The serving plan Lifecycle(date) decided."""
    return read_json(Lifecycle(date=date).folder() / "plan.json")["plan"]


# --- scoring and the daily summary -----------------------------------------------------------


def predictions_path(date: dt.date) -> Path:
    return Score(date=date).folder() / "predictions.parquet"


class Score(DailyStage):
    """`predictions/{tag}/date=D/predictions.parquet` (p_fail per wafer-sort-passing die, the
    version that served it, and the champion's and challenger's own scores) and `wafers.parquet`
    (yield forecast per wafer), as the day's lifecycle plan says."""

    stage = "score"
    folder_name = "predictions"
    reads = (Lifecycle, Features)

    def requires(self) -> dict[str, Any]:
        return {"features": Features(date=self.date), "lifecycle": Lifecycle(date=self.date)}

    def run(self) -> None:
        plan = plan_of(self.date)
        present, offline = present_fabs(self.date)
        if plan["champion"] is None or not present:
            status = "no production model" if plan["champion"] is None else "no dies: every fab offline"
            with self.publish() as (_, manifest):
                manifest.update(status=status, fabs=present, offline_fabs=offline)
                manifest["rows"] = {"dies": 0, "wafers": 0}
            return
        self.set_status_message(f"scoring with {lifecycle.describe(plan)}")
        loaded = self.load_models(plan)
        scored = lifecycle.serve(
            read_features(self.date, lifecycle.columns_read(loaded.values())), plan, loaded
        )
        floor = wafer_yield().min_forecast_yield
        predictions, wafers, low = yield_model.score_day(scored, floor, lifecycle.SERVING_COLUMNS)
        with self.publish() as (work, manifest):
            predictions.to_parquet(work / "predictions.parquet", index=False)
            wafers.to_parquet(work / "wafers.parquet", index=False)
            manifest.update(status="scored", fabs=present, offline_fabs=offline, **lifecycle.summary(plan))
            manifest["served"] = predictions["model_version"].value_counts().sort_index().to_dict()
            manifest.update(rows={"dies": len(predictions), "wafers": len(wafers)}, low_yield_wafers=low)
        if low:
            message = f"{len(low)} wafer(s) forecast below {floor:.0%} yield on {self.date}"
            alert(
                WORKFLOW,
                self.task_id,
                "warning",
                message,
                key="low yield",
                wafers=manifest["low_yield_wafers"],
            )

    def load_models(self, plan: lifecycle.Plan) -> dict[int, Any]:
        """The plan's models, each checked against the sha256 recorded when it was registered: a
        mismatch is refused with an alert (and the day is not scored)."""
        loaded = {}
        for number in lifecycle.versions_of(plan):
            try:
                loaded[number] = registry.load(store(), number, scratch())
            except ModelIntegrityError as refused:
                alert(
                    WORKFLOW,
                    self.task_id,
                    "error",
                    str(refused),
                    key=f"model integrity {number}",
                    version=number,
                )
                raise
        return loaded


class YieldReport(DailyStage):
    """`reports/{tag}/date=D/index.html`: the day's yield report (jobs/domain/report_page.py), its
    PNGs and exports (SINF maps, dies.csv), with the day before's final test against its p_fail."""

    stage = "report"
    folder_name = report_page.REPORTS_FOLDER
    reads = (Score, Features, IngestFab)

    def trend_days(self) -> list[dt.date]:
        return history_days(self.date - dt.timedelta(days=29), self.date)

    def requires(self) -> dict[str, Any]:
        previous = previous_history_day(self.date)
        return {
            "score": Score(date=self.date),
            "ingest": self.ingests(),
            "trend": [Features(date=d) for d in self.trend_days()],
            **({"previous": Score(date=previous)} if previous else {}),
        }

    def run(self) -> None:
        present, offline = present_fabs(self.date)
        if not present:
            with self.publish() as (work, manifest):
                why = "no dies: every fab offline"
                manifest.update(
                    fabs=present, offline_fabs=offline, **report_page.empty_report(self.date, why, work)
                )
            return
        self.set_status_message(f"reading {', '.join(present)}")
        inputs = report_inputs(self.date, self.trend_days())
        self.set_status_message(f"drawing {inputs.dies.groupby(views.WAFER).ngroups} wafers")
        with self.publish() as (work, manifest):
            manifest.update(fabs=present, offline_fabs=offline, **report_page.render_report(inputs, work))


def report_inputs(date: dt.date, trend_days: list[dt.date]) -> report_page.ReportInputs:
    """What YieldReport(date) draws, read from the stages before it."""
    key_tests = quality_monitor().key_test_list()
    parts, results, bins, tests = day_tables(date, key_tests)
    score = Score(date=date).manifest()
    scored = score["status"] == "scored"
    previous = previous_history_day(date)
    before = None
    if previous is not None and present_fabs(previous)[0]:
        labels = labels_landed(previous + dt.timedelta(days=1), date)
        before = (previous, views.die_table(day_tables(previous, [])[0], scored_dies(previous), labels))
    return report_page.ReportInputs(
        date=date,
        dies=views.die_table(parts, scored_dies(date)),
        results=results,
        bins=bins,
        tests=tests,
        forecasts=pd.read_parquet(Score(date=date).folder() / "wafers.parquet") if scored else None,
        scored=score["status"],
        previous=before,
        trend=views.yield_trend({str(d): ws_outcomes(d) for d in trend_days}),
        key_tests=key_tests,
        min_forecast_yield=wafer_yield().min_forecast_yield,
    )


def ws_outcomes(date: dt.date) -> pd.DataFrame:
    """fab and ws_passed of every die of a day (its features)."""
    return pd.read_parquet(Features(date=date).folder() / "features.parquet", columns=["fab", "ws_passed"])


def scored_dies(date: dt.date) -> pd.DataFrame | None:
    path = predictions_path(date)
    return pd.read_parquet(path, columns=[*feats.FEATURE_KEY, "fab", "p_fail"]) if path.exists() else None


def day_tables(date: dt.date, key_tests: list[str]) -> tuple[pd.DataFrame, ...]:
    """The report's tables of a day's fabs present (see `views.read_day`)."""
    days = {fab: read_ingest(fab, date) for fab in present_fabs(date)[0]}
    return views.read_day({fab: (day["dies"], day["sources"]) for fab, day in days.items()}, key_tests)


class WaferYieldDaily(DailyStage):
    """The day as the schedule runs it; `wafer_yield_daily/{tag}/date=D/manifest.json` is its summary."""

    stage = "daily"
    folder_name = "wafer_yield_daily"
    reads = (Score, YieldReport)

    def requires(self) -> dict[str, Any]:
        return {
            "score": Score(date=self.date),
            "report": YieldReport(date=self.date),
            "gate": QualityGate(date=self.date),
            "lifecycle": Lifecycle(date=self.date),
            "ingest": self.ingests(),
        }

    def run(self) -> Generator[Approval, Any, None]:
        waiting = lifecycle.awaiting_approval(Lifecycle(date=self.date).manifest()["happened"])
        if waiting and not models().auto_approve:
            self.set_status_message(f"version(s) {waiting} wait for approval (scripts/models approve)")
            yield [Approval(version=v) for v in waiting]  # pending in the visualizer until decided
        waiting = [v for v in waiting if not registry.decided(store(), v)]
        present, offline = present_fabs(self.date)
        ingests = [IngestFab(fab=f, date=self.date).manifest() for f in present]
        decision = Deploy(date=self.date).manifest()
        score = Score(date=self.date).manifest()
        with self.publish() as (_, manifest):
            manifest.update(
                fabs=present,
                offline_fabs=offline,
                dies=sum(m["rows"]["dies"] for m in ingests),
                quarantined=[q["file"] for m in ingests for q in m["quarantined"]],
                resent=[d["file"] for m in ingests for d in m["duplicate_files"]],
                quality_gate=QualityGate(date=self.date).manifest()["failed"] or "passed",
                decision=decision["decision"],
                why=decision.get("why", ""),
                candidate_version=decision.get("version"),
                awaiting_approval=waiting,
                lifecycle=lifecycle.summary(plan_of(self.date)),
                scored=score["status"],
                low_yield_wafers=len(score.get("low_yield_wafers", [])),
                report=str(YieldReport(date=self.date).folder() / "index.html"),
            )
