"""Shared Luigi building blocks: versioned output paths, content ids, and the per-file conversion.

Every STDF file is converted once, by `ConvertFile`, into a folder named after the sha256 of its
bytes, so each workflow that needs the file reuses the same conversion and a file landed twice
(under two names) is parsed once. The folder appears whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import luigi

from .config import paths, stdf, versions
from .stdf import convert_stdf
from .stdf.source import stored_stream_size


def stage_dir(stage: str, version: int) -> Path:
    """`{root}/{stage}/v{version}`: bumping a stage's version gives it a fresh tree."""
    return paths().root_path() / stage / f"v{version}"


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
        folder = stage_dir("converted", versions().convert) / content_sha256(self.path)
        return luigi.LocalTarget(str(folder / "manifest.json"))

    def run(self) -> None:
        settings = stdf()
        engine = self.engine or settings.engine
        outdir = Path(self.output().path).parent
        self.set_status_message(f"converting {Path(self.path).name} with the {engine} engine")
        convert_stdf(
            self.path,
            outdir,
            engine=engine,
            batch_size=settings.batch_size,
            compression=settings.compression,
            progress=self._progress_reporter(),
            sha256=outdir.name,  # the output folder is named by it: hashed once, in output()
            lineage={
                "task": self.task_family,
                "params": self.to_str_params(),
                "stage_version": versions().convert,
                "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
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


def landed_files(fab_day: Path) -> list[Path]:
    """The STDF files of one landing folder, in name order (markers and temporaries excluded)."""
    return sorted(p for p in fab_day.iterdir() if p.is_file() and not p.name.startswith((".", "_")))


class ConvertLandingDay(luigi.WrapperTask):
    """Convert every file that landed on `date`, for every fab (what the demo runs until
    the wafer-yield workflow exists)."""

    date = luigi.DateParameter()

    def requires(self) -> list[ConvertFile]:
        landing = paths().root_path() / "landing"
        days = sorted(landing.glob(f"*/{self.date:%Y-%m-%d}")) if landing.exists() else []
        return [ConvertFile(path=str(f)) for day in days for f in landed_files(day)]
