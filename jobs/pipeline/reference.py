"""The reference files every workflow reads, each read once per version of the file: the test-name
mapping and the clock corrections ([merge] test_names, clock_corrections) and the physical bounds
([quality_monitor] physical_bounds), paths relative to the repo."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from jobs.domain import harmonize, monitor
from jobs.pipeline.settings import merge, quality_monitor, repo_file


@functools.cache
def _test_names(path: str, mtime: float) -> pd.DataFrame:
    return harmonize.read_test_names(Path(path))


@functools.cache
def _corrections(path: str, mtime: float) -> pd.DataFrame:
    return harmonize.read_corrections(Path(path))


def test_names() -> pd.DataFrame:
    """The test-name mapping (jobs/domain/harmonize.py read_test_names), read again when it changes."""
    path = repo_file(merge().test_names)
    return _test_names(str(path), path.stat().st_mtime)


def clock_corrections() -> pd.DataFrame:
    """The clock corrections (jobs/domain/harmonize.py read_corrections), read again when they change."""
    path = repo_file(merge().clock_corrections)
    return _corrections(str(path), path.stat().st_mtime)


def physical_bounds() -> pd.DataFrame:
    """The physical bounds, checked against the canonical units of the test-name mapping."""
    path = repo_file(quality_monitor().physical_bounds)
    return monitor.checked_bounds(pd.read_csv(path, comment="#"), test_names(), str(path))
