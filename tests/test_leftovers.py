"""Leftovers of killed runs (jobs/files.py sweep, run once per command by jobs/ops/runtime.py):
old hidden temporaries whose writer is gone are removed by the next command; fresh ones, ones a
live process writes, published folders and the landing zone stay."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from jobs.files import sweep
from tests.helpers import REPO

DAY = 24 * 3600


def dead_pid() -> int:
    """The pid of a process that has ended."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def plant(path: Path, age_seconds: float, folder: bool = False) -> Path:
    """A leftover: a file, or a folder with a half-written file, last touched `age_seconds` ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        path.mkdir()
        (path / "results.parquet").write_bytes(b"half")
    else:
        path.write_bytes(b"half")
    stamp = time.time() - age_seconds
    for p in [*path.rglob("*"), path]:
        os.utime(p, (stamp, stamp))
    return path


def floor(root: Path) -> dict[str, Path]:
    """Old and fresh leftovers where killed stages leave them, and things that are no leftovers."""
    dead, live = dead_pid(), os.getpid()
    day = root / "features" / "v1.1.1" / "date=2026-11-10"
    day.mkdir(parents=True)
    (day / "manifest.json").write_text("{}")
    registry = root / "models" / "registry"
    return {
        "old stage folder": plant(
            root / "models" / "v1" / f".date=2026-11-10.tmp-{dead}-k2j4", 2 * DAY, True
        ),
        "old conversion": plant(root / "converted" / "v1" / f".{'a' * 64}.tmp-{dead}-x", 2 * DAY, True),
        "old pre-pid work folder": plant(root / "converted" / "v1" / ".b.tmp-q8z0w1", 2 * DAY, True),
        "old replaced folder": plant(
            root / "ingest" / "v1.1" / f".date=2026-11-09.old.tmp-{dead}", 2 * DAY, True
        ),
        "old pointer": plant(registry / ".production.json.3k2jd8.tmp", 2 * DAY),
        "old cooldown": plant(root / "alerts" / f".last_sent.json.tmp-{dead}-140", 2 * DAY),
        "old .old- folder": plant(root / "quality" / "v1.1.1" / ".date=2026-11-08.old-77", 2 * DAY, True),
        "fresh stage folder": plant(root / "models" / "v1" / f".date=2026-11-11.tmp-{dead}-a1", 600, True),
        "old, writer alive": plant(
            root / "features" / "v1.1.1" / f".date=2026-11-11.tmp-{live}-z", 2 * DAY, True
        ),
        "old, file inside fresh": plant(root / "score" / f".date=2026-11-12.tmp-{dead}-b", 2 * DAY, True),
        "landing upload": plant(root / "landing" / "fab1" / "2026-11-10" / ".lot.stdf.gz.tmp", 2 * DAY),
        "registry lock": plant(registry / ".lock", 2 * DAY),
        "published day": day,
    }


SWEPT = {
    "old stage folder",
    "old conversion",
    "old pre-pid work folder",
    "old replaced folder",
    "old pointer",
}
SWEPT |= {"old cooldown", "old .old- folder"}


def test_a_command_sweeps_old_leftovers_of_dead_writers(tmp_path: Path) -> None:
    root = tmp_path / "data"
    planted = floor(root)
    (planted["old, file inside fresh"] / "results.parquet").write_bytes(
        b"a writer on another host, still writing"
    )
    config = tmp_path / "site.cfg"
    config.write_text(f"[paths]\nroot = {root}\nleftover_hours = 24\n")
    command = [sys.executable, "-m", "luigi", "--module", "jobs.wafer_yield", "FabDayLanded"]
    command += ["--fab", "fab1", "--date", "2026-11-10", "--local-scheduler"]
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(config)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert {name for name, path in planted.items() if not path.exists()} == SWEPT


def test_the_age_is_a_setting(tmp_path: Path) -> None:
    planted = floor(tmp_path)
    assert sweep(tmp_path, 3 * DAY, skip=("landing",)) == []  # nothing is that old
    removed = sweep(tmp_path, DAY, skip=("landing",))
    assert sorted(removed) == sorted(planted[name] for name in SWEPT | {"old, file inside fresh"})
    assert sweep(tmp_path, 0, skip=("landing",)) == [
        planted["fresh stage folder"]
    ]  # what is left: a live writer's
