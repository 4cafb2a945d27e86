"""STDF V4 reading into normalized Arrow tables, and conversion to Parquet. No Luigi here.

    read_stdf(path)                  -> StdfTables(parts, results, tests, bins, file)   (in memory)
    convert_stdf(path, outdir)       -> manifest dict; writes the four tables as Parquet, streaming

Both take `engine="arrow"` (stdf-convert, the default) or `engine="pystdf"` (the reference).
Bad input raises StdfReadError, whose message names the file and the byte offset.
"""

from __future__ import annotations

from .convert import TABLES, StdfTables, convert_stdf, read_stdf
from .engines import ENGINES
from .source import StdfReadError

__all__ = ["ENGINES", "TABLES", "StdfReadError", "StdfTables", "convert_stdf", "read_stdf"]
