"""The landing zone: `{root}/landing/{fab}/{YYYY-MM-DD}/` holds a fab's files of a day, and
`_READY` when the fab has delivered all of them."""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

import luigi

from jobs.pipeline.backoff import with_retries
from jobs.pipeline.parameters import inside_root
from jobs.pipeline.settings import paths

logger = logging.getLogger("luigi-interface")
WAIT_NOTE_SECONDS = 240  # a waiting run re-checks a late fab every 5 minutes ([scheduler] retry_delay)
_last_note: dict[str, float] = {}


def landing_day(fab: str, date: dt.date) -> Path:
    """`{root}/landing/{fab}/{YYYY-MM-DD}`: where a fab's testers deliver a day's files."""
    return inside_root(paths().root_path() / "landing" / fab / f"{date:%Y-%m-%d}")


def landing_folders(fab: str, first: dt.date, last: dt.date) -> list[Path]:
    """The fab's landing folders that exist, from `first` to `last` (inclusive), in date order."""
    days = (first + dt.timedelta(days=n) for n in range((last - first).days + 1))
    return [folder for day in days if (folder := landing_day(fab, day)).exists()]


def is_ready(fab: str, date: dt.date) -> bool:
    """A landing day is complete when the fab has written its `_READY` marker."""
    return (landing_day(fab, date) / "_READY").exists()


def note_waiting(task: luigi.Task, what: str, until: dt.datetime, then: str) -> None:
    """Log what a run is waiting for and until when, once per task every few minutes, so a run
    held up by a late fab says so among luigi's own lines."""
    now = time.monotonic()
    if now - _last_note.get(task.task_id, -WAIT_NOTE_SECONDS) < WAIT_NOTE_SECONDS:
        return
    _last_note[task.task_id] = now
    logger.info("waiting for %s until %s UTC; then %s", what, f"{until:%Y-%m-%d %H:%M}", then)


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
