"""Shared Luigi building blocks: versioned output paths, content ids, and the per-file conversion.

Every STDF file is converted once, by `ConvertFile`, into a folder named after the sha256 of its
bytes, so each workflow that needs the file reuses the same conversion and a file landed twice
(under two names) is parsed once. The folder appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import luigi

from jobs import __version__
from jobs.ops import history  # noqa: F401 - history registers the run-history handlers
from jobs.pipeline.backoff import check_settled, with_retries
from jobs.pipeline.settings import paths, stdf, version_tag
from jobs.stdf import convert_stdf, replace_dir
from jobs.stdf.source import StdfReadError, stored_stream_size

# The folder below the data root where each stage writes.
STAGE_DIRS = {
    "convert": "converted",
    "ingest": "ingest",
    "quality": "quality",
    "features": "features",
    "train": "models",
    "validate": "validation",
    "deploy": "deploy",
    "score": "predictions",
    "daily": "wafer_yield_daily",
    "fab_hour": "fab_hour",
    "reference": "reference",
    "normalize": "normalize",
    "feature_store": "feature_store",
    "merge": "fab_merge_hourly",
    "monitor_reference": "monitor_reference",
    "monitor": "quality_monitor",
}


def stage_dir(stage: str) -> Path:
    """`{root}/{stage folder}/{version tag}`: bumping a version gives the stage a fresh tree."""
    return paths().root_path() / STAGE_DIRS[stage] / version_tag(stage)


# --- atomic output folders with manifests ---------------------------------------------------


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield an empty work folder beside `target`, renamed to `target` when the block ends.

    A run killed inside the block leaves only a hidden `.{name}.tmp-*` folder, never a partial
    `target`; the rerun starts over."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield work
        replace_dir(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def describe_inputs(files: list[Path]) -> list[dict[str, Any]]:
    """Lineage of input files: path and size (STDF sources are identified by sha256 elsewhere)."""
    return [{"path": str(f), "bytes": f.stat().st_size} for f in files if f.exists()]


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@luigi.Task.event_handler(luigi.Event.START)
def _note_start(task: luigi.Task) -> None:
    """When a task's run() starts, so a manifest's `seconds` covers the whole run, not only the
    writing."""
    task._run_started = time.perf_counter()


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class StageTask(luigi.Task):
    """A stage of a workflow: its output is a folder under `stage_dir(stage)`, complete when
    its `manifest.json` exists. Subclasses set `stage`, define `partition()` and write their
    files into the folder `publish` gives them."""

    stage: ClassVar[str]
    workflow: ClassVar[str] = ""
    # Inside a Parquet dataset (the feature store) the manifest is `_manifest.json`: readers skip
    # names starting with "_" or ".".
    manifest_name: ClassVar[str] = "manifest.json"

    def partition(self) -> str:
        raise NotImplementedError

    def folder(self) -> Path:
        return stage_dir(self.stage) / self.partition()

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
                version_tag=version_tag(self.stage),
                inputs=describe_inputs(inputs or []),
                seconds=round(time.perf_counter() - started, 3),
                code_version=__version__,
                finished_utc=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            )
            write_json(work / self.manifest_name, manifest)


class FabDayStage(StageTask):
    """A stage of one fab's day: `{stage folder}/{tag}/date=D/fab=F/`."""

    fab = luigi.Parameter()
    date = luigi.DateParameter()

    def partition(self) -> str:
        return f"date={self.date:%Y-%m-%d}/fab={self.fab}"


# --- content ids --------------------------------------------------------------------------------

_cache_lock = threading.Lock()


def content_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) in `{root}/cache/sha256.sqlite`.

    Luigi asks every task for its output path whenever it checks completeness; without the
    cache each check of a 100 MB file would hash it again.
    """
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    db = paths().root_path() / "cache" / "sha256.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    with _cache_lock, sqlite3.connect(db, timeout=30) as con:
        con.execute("CREATE TABLE IF NOT EXISTS sha256 (path TEXT, size INT, mtime_ns INT, sha256 TEXT, "
                    "PRIMARY KEY (path, size, mtime_ns))")  # fmt: skip
        row = con.execute("SELECT sha256 FROM sha256 WHERE path=? AND size=? AND mtime_ns=?", key).fetchone()
        if row:
            return row[0]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    with _cache_lock, sqlite3.connect(db, timeout=30) as con:
        con.execute("INSERT OR REPLACE INTO sha256 VALUES (?, ?, ?, ?)", (*key, digest.hexdigest()))
    return digest.hexdigest()


# --- the per-file conversion --------------------------------------------------------------------


class ConvertFile(luigi.Task):
    """One STDF file -> `{root}/converted/v{N}/{sha256}/{parts,results,tests,bins}.parquet`."""

    path = luigi.Parameter(description="an STDF file (.stdf, .std, .gz, .bz2, .zip)")
    engine = luigi.Parameter(default="", description="arrow or pystdf; default: [stdf] engine")

    def output(self) -> luigi.LocalTarget:
        try:
            self._sha256 = content_sha256(self.path)
        except FileNotFoundError:
            # Another workflow quarantined the file after it was converted for this one; the
            # conversion is still there, under the content it had.
            if not hasattr(self, "_sha256"):
                raise
        return luigi.LocalTarget(str(stage_dir("convert") / self._sha256 / "manifest.json"))

    def run(self) -> None:
        settings = stdf()
        engine = self.engine or settings.engine
        # A file still being written is waited for (with backoff), and hashed again once settled:
        # the output folder is named by the content that is converted.
        source = Path(self.path)
        with_retries(f"waiting for {source}", lambda: check_settled(source), self.set_status_message)
        outdir = Path(self.output().path).parent
        lineage = {
            "task": self.task_family,
            "params": self.to_str_params(),
            "version_tag": version_tag("convert"),
            "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }

        def convert() -> None:
            self.set_status_message(f"converting {Path(self.path).name} with the {engine} engine")
            convert_stdf(
                self.path,
                outdir,
                engine=engine,
                batch_size=settings.batch_size,
                compression=settings.compression,
                progress=self._progress_reporter(),
                sha256=outdir.name,  # the output folder is named by it: hashed once, in output()
                lineage={"status": "ok", **lineage},
            )

        try:
            # A share that does not answer is asked again, with backoff.
            with_retries(f"converting {self.path}", convert, on_retry=self.set_status_message)
        except StdfReadError as error:
            # Bad bytes stay bad: the verdict is this content's conversion, so the file is
            # judged once and every workflow sees the same reason (and quarantines the file).
            with staged_folder(outdir) as work:
                write_json(
                    work / "manifest.json",
                    {
                        "status": "unreadable",
                        "error": str(error),
                        "reason": error.reason,
                        "byte_offset": error.offset,
                        "input": {"path": str(source), "bytes": source.stat().st_size, "sha256": outdir.name},
                        **lineage,
                    },
                )

    def _progress_reporter(self) -> Callable[[int], None] | None:
        """Report progress to the visualizer in whole percent of the decompressed stream."""
        size = stored_stream_size(self.path)
        if not size:
            return None
        last = [-1]

        def report(offset: int) -> None:
            percent = min(99, 100 * (offset % size) // size)
            if percent != last[0]:
                last[0] = percent
                self.set_progress_percentage(percent)

        return report


def landing_day(fab: str, date: dt.date) -> Path:
    """`{root}/landing/{fab}/{YYYY-MM-DD}`: where a fab's testers deliver a day's files."""
    return paths().root_path() / "landing" / fab / f"{date:%Y-%m-%d}"


def landing_folders(fab: str, first: dt.date, last: dt.date) -> list[Path]:
    """The fab's landing folders that exist, from `first` to `last` (inclusive), in date order."""
    days = (first + dt.timedelta(days=n) for n in range((last - first).days + 1))
    return [folder for day in days if (folder := landing_day(fab, day)).exists()]


def is_ready(fab: str, date: dt.date) -> bool:
    """A landing day is complete when the fab has written its `_READY` marker."""
    return (landing_day(fab, date) / "_READY").exists()


def still_landed(files: list[Path], targets: list[luigi.LocalTarget]) -> list[tuple[Path, luigi.LocalTarget]]:
    """(file, conversion) of the files still in the landing zone: while a workflow converted them,
    another (the quality monitor, an ingest) may have set some aside."""
    return [(f, t) for f, t in zip(files, targets, strict=True) if f.exists()]


def landed_files(fab_day: Path) -> list[Path]:
    """The STDF files of one landing folder, in name order (markers and temporaries excluded).
    A landing share that does not answer is asked again, with backoff."""

    def listing() -> list[Path]:
        return sorted(p for p in fab_day.iterdir() if p.is_file() and not p.name.startswith((".", "_")))

    return with_retries(f"listing {fab_day}", listing)
