"""A landed STDF file and its conversion (the folder ConvertFile wrote: parts, results, tests and
bins as Parquet, and manifest.json), as the domain functions take it. No Luigi here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple


class Conversion(NamedTuple):
    """A landed file, the folder of its tables and the conversion's manifest (for a file that is
    not valid STDF, an `unreadable` verdict with the error and its byte offset, and no tables)."""

    path: Path
    folder: Path
    manifest: dict[str, Any]

    @property
    def readable(self) -> bool:
        return self.manifest.get("status", "ok") == "ok"

    @property
    def sha256(self) -> str:
        return self.manifest["input"]["sha256"]

    @property
    def facts(self) -> dict[str, Any]:
        """What the conversion found in the file: wafers, job, start and finish times, ..."""
        return self.manifest["file"]


def distinct(conversions: list[Conversion]) -> list[Conversion]:
    """The readable conversions, a file resent under another name (same sha256) once."""
    return list({c.sha256: c for c in conversions if c.readable}.values())
