"""Shared fixtures: the real tester files in ../shared/stdf (read in place, never copied)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.helpers import SHARED_STDF


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
