"""The stage framework: where each stage writes, its version tag, and publishing its folder.

Every stage class declares, in one place, its folder below the data root (`folder_name`), its
version key in luigi.cfg's [versions] (`stage`) and the stage classes it reads (`reads`). The
version tag in its output path is derived from those declarations: its own version and those of
every stage upstream of it, so bumping one version moves that stage and everything downstream
to fresh paths (a Range rerun recomputes them) and leaves everything upstream alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import luigi

from jobs import __version__
from jobs.files import read_json, staged_folder, write_json
from jobs.pipeline import locks
from jobs.pipeline.parameters import FabParameter, PlausibleDateParameter, inside_root
from jobs.pipeline.settings import paths, versions

# Every versioned stage class, by version key, in definition order: the order of the numbers in
# a version tag (upstream stages are defined before the stages that read them).
STAGES: dict[str, type[Versioned]] = {}


class Versioned:
    """A stage's declaration: `stage` (its [versions] key), `folder_name` (default: the key) and
    `reads` (the stage classes it reads, or their task family names for ones defined later).
    Its `run()` runs under the lock of its output folder (jobs/pipeline/locks.py)."""

    stage: ClassVar[str]
    folder_name: ClassVar[str] = ""
    reads: ClassVar[tuple[type[Versioned] | str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "stage" in cls.__dict__:
            if cls.stage in STAGES and STAGES[cls.stage].__qualname__ != cls.__qualname__:
                raise TypeError(
                    f"stage key {cls.stage!r} of {cls.__name__} is {STAGES[cls.stage].__name__}'s"
                )
            STAGES[cls.stage] = cls
        locks.install(cls)  # one writer per output folder, whatever the scheduler

    @classmethod
    def upstream(cls) -> list[type[Versioned]]:
        """The stage classes this one reads directly."""
        by_name = {c.__name__: c for c in STAGES.values()}
        return [by_name[r] if isinstance(r, str) else r for r in cls.reads]

    @classmethod
    def lineage(cls) -> list[str]:
        """The version keys of this stage and every stage upstream of it, in definition order."""
        seen = {cls.stage}
        todo: list[type[Versioned]] = [cls]
        while todo:
            for parent in todo.pop().upstream():
                if parent.stage not in seen:
                    seen.add(parent.stage)
                    todo.append(parent)
        return [key for key in STAGES if key in seen]

    @classmethod
    def version_tag(cls) -> str:
        """'v' and the versions of the lineage, dot-joined: features -> 'v1.1.2' for convert 1,
        ingest 1, features 2 (the stage's own version is not always last: see Validate)."""
        current = versions()
        return "v" + ".".join(str(getattr(current, key)) for key in cls.lineage())

    @classmethod
    def stage_root(cls) -> Path:
        """`{root}/{folder}/{version tag}`: bumping a version gives the stage a fresh tree."""
        return paths().root_path() / (cls.folder_name or cls.stage) / cls.version_tag()


def stage_dir(stage: str) -> Path:
    """The `stage_root()` of the stage class with version key `stage`."""
    return STAGES[stage].stage_root()


def note_start(task: luigi.Task) -> None:
    """When a task's run() starts, so a manifest's `seconds` covers the whole run, not only the
    writing."""
    task._run_started = time.perf_counter()


def describe_inputs(files: list[Path]) -> list[dict[str, Any]]:
    """Lineage of input files: path and size (STDF sources are identified by sha256 elsewhere)."""
    return [{"path": str(f), "bytes": f.stat().st_size} for f in files if f.exists()]


class StageTask(Versioned, luigi.Task):
    """A stage of a workflow: its output is a folder `stage_root() / partition()`, complete when
    its `manifest.json` exists. Subclasses declare the stage (see `Versioned`), define
    `partition()` and write their files into the folder `publish` gives them."""

    workflow: ClassVar[str] = ""
    # Inside a Parquet dataset (the feature store) the manifest is `_manifest.json`: readers skip
    # names starting with "_" or ".".
    manifest_name: ClassVar[str] = "manifest.json"
    # The parameter a Range tool varies, and a glob of the partitions (see bulk_complete).
    period_parameter: ClassVar[str] = "date"
    partition_glob: ClassVar[str] = "date=*"

    def partition(self) -> str:
        raise NotImplementedError

    def folder(self) -> Path:
        return inside_root(self.stage_root() / self.partition())

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.folder() / self.manifest_name))

    def manifest(self) -> dict[str, Any]:
        return read_json(Path(self.output().path))

    @contextlib.contextmanager
    def publish(self, inputs: list[Path] | None = None) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Yield (work folder, manifest dict); the caller adds rows and facts to the dict. At
        the end the manifest gets lineage and timings and the folder appears atomically."""
        started = getattr(self, "_run_started", time.perf_counter())
        manifest: dict[str, Any] = {}
        with staged_folder(self.folder()) as work:
            yield work, manifest
            manifest.update(
                task=self.task_family,
                params=self.to_str_params(),
                stage=self.stage,
                version_tag=self.version_tag(),
                inputs=describe_inputs(inputs or []),
                seconds=round(time.perf_counter() - started, 3),
                code_version=__version__,
                finished_utc=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            )
            write_json(work / self.manifest_name, manifest)

    @classmethod
    def bulk_complete(cls, parameter_tuples: Iterable[Any]) -> list[Any]:
        """Which of these periods are complete (a Range tool asks for many at once): one listing
        of the stage's manifests, then `complete()` (which only reads JSON) for those found.
        For stages with one period parameter, named by `period_parameter`."""
        make = cls  # luigi's Range tools pass functools.partial(cls, **of_params) as `cls`
        stage = getattr(make, "func", make)
        base = stage.stage_root()
        manifests = base.glob(f"{stage.partition_glob}/{stage.manifest_name}") if base.exists() else []
        found = {p.parent for p in manifests}
        tasks = ((value, make(**{stage.period_parameter: value})) for value in parameter_tuples)
        return [value for value, task in tasks if task.folder() in found and task.complete()]


class FabDayStage(StageTask):
    """A stage of one fab's day: `{stage folder}/{tag}/date=D/fab=F/`."""

    fab = FabParameter()  # of any workflow's list; the workflow's own fabs are the ones it asks for
    date = PlausibleDateParameter()

    def partition(self) -> str:
        return f"date={self.date:%Y-%m-%d}/fab={self.fab}"
