"""The per-file conversion, shared by every workflow: each STDF file is converted once, by
`ConvertFile`, into a folder named after the sha256 of its bytes, so each workflow that needs
the file reuses the same conversion and a file landed twice (under two names) is parsed once.
The folder appears whole or not at all; a file that is not valid STDF gets an `unreadable`
verdict in its place, judged once for every workflow.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import threading
from collections.abc import Callable, Generator
from pathlib import Path

import luigi

from jobs.domain.conversion import Conversion
from jobs.files import read_json, staged_folder, write_json
from jobs.pipeline.backoff import check_settled, with_retries
from jobs.pipeline.landing import still_landed
from jobs.pipeline.settings import paths, stdf
from jobs.pipeline.stages import Versioned
from jobs.stdf import convert_stdf
from jobs.stdf.source import StdfReadError, stored_stream_size

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


class ConvertFile(Versioned, luigi.Task):
    """One STDF file -> `{root}/converted/v{N}/{sha256}/{parts,results,tests,bins}.parquet`."""

    stage = "convert"
    folder_name = "converted"

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
        return luigi.LocalTarget(str(self.stage_root() / self._sha256 / "manifest.json"))

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
            "version_tag": self.version_tag(),
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
                plausibility=settings.plausibility(),
                scratch=settings.scratch(),
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


def converted_folder(sha256: str) -> Path:
    """The conversion folder of the file with this content."""
    return ConvertFile.stage_root() / sha256


def landed_conversions(
    files: list[Path],
) -> Generator[list[ConvertFile], list[luigi.LocalTarget], list[Conversion]]:
    """In a run(), `conversions = yield from landed_conversions(files)`: every file converted once
    (luigi runs the missing conversions, in parallel, then the run again), then the conversions
    of the files still landed (another workflow may have set some aside meanwhile), readable or not."""
    targets = yield [ConvertFile(path=str(f)) for f in files]
    return [
        Conversion(f, Path(t.path).parent, read_json(Path(t.path))) for f, t in still_landed(files, targets)
    ]
