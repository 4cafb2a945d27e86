"""Shared fixtures: the real tester files in ../shared/stdf (read in place, never copied)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import SHARED_STDF, luigi_settings


@pytest.fixture(scope="session", autouse=True)
def tasks_in_process() -> Iterator[None]:
    """luigi.cfg runs every task in a process of its own ([worker] force_multiprocessing); the
    tests that build tasks in this process run them here, so that their spies, caplog and
    monkeypatches see them. The commands the tests start keep the default."""
    with luigi_settings(worker={"force_multiprocessing": "false"}):
        yield


@pytest.fixture(scope="session")
def shared_stdf() -> Path:
    if not SHARED_STDF.is_dir():
        pytest.skip(
            f"real STDF files not found: {SHARED_STDF} is absent (see DEVELOPERS.md, 'Data you have')"
        )
    return SHARED_STDF


@pytest.fixture(scope="session")
def lot2_bytes(shared_stdf: Path) -> bytes:
    """lot2 decompressed: a big-endian Teradyne wafer-sort file."""
    return gzip.decompress((shared_stdf / "lot2.stdf.gz").read_bytes())
