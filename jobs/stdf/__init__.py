"""STDF V4 reading into normalized Arrow tables, and conversion to Parquet. No Luigi here.

    read_stdf(path)                  -> StdfTables(parts, results, tests, bins, file)   (in memory)
    convert_stdf(path, outdir)       -> manifest dict; writes the four tables as Parquet, streaming

Both take `engine="arrow"` (stdf-convert, the default) or `engine="pystdf"` (the reference).
Bad input raises StdfReadError, whose message names the file and the byte offset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from .engines import ENGINES, EngineError, read_batches
from .normalize import RESULTS_SCHEMA, Normalizer, StructureError
from .source import StdfReadError, sniff_byte_order, walk_records, write_prefix

__all__ = ["ENGINES", "StdfReadError", "StdfTables", "convert_stdf", "read_stdf", "TABLES"]

TABLES = ("parts", "results", "tests", "bins")
DEFAULT_BATCH_SIZE = 4096


@dataclass
class StdfTables:
    parts: pa.Table
    results: pa.Table
    tests: pa.Table
    bins: pa.Table
    file: dict


class _MemorySink:
    def __init__(self) -> None:
        self.tables: list[pa.Table] = []

    def __call__(self, table: pa.Table) -> None:
        self.tables.append(table)

    def reset(self) -> None:
        self.tables = []

    def table(self) -> pa.Table:
        return pa.concat_tables(self.tables) if self.tables else RESULTS_SCHEMA.empty_table()


def read_stdf(path: str | Path, engine: str = "arrow", batch_size: int = DEFAULT_BATCH_SIZE) -> StdfTables:
    """Read a whole STDF file into the normalized tables (for files that fit in memory)."""
    sink = _MemorySink()
    parts, tests, bins, facts = normalize_file(path, engine, batch_size, sink, sink.reset)
    return StdfTables(parts=parts, results=sink.table(), tests=tests, bins=bins, file=facts)


def normalize_file(
    path: str | Path,
    engine: str,
    batch_size: int,
    emit: Callable[[pa.Table], None],
    reset: Callable[[], None],
    progress: Callable[[int], None] | None = None,
) -> tuple[pa.Table, pa.Table, pa.Table, dict]:
    """Stream `path` through the normalizer; results go to `emit`, the rest is returned.

    A truncated file is read again from its last complete record (after `reset()` has
    discarded what was emitted), so every complete part is kept and the open one is dropped.
    """
    path = Path(path)
    order = sniff_byte_order(path)
    try:
        parts, tests, bins, facts = _run(path, path.name, engine, batch_size, emit, progress)
        facts.update(truncated=False, truncated_at=None)
    except EngineError as exc:
        walk = walk_records(path, order.order)
        if not walk.truncated:
            where = walk.complete_end if walk.problem else None
            raise StdfReadError(path, f"cannot decode: {walk.problem or exc}", where) from None
        reset()
        parts, tests, bins, facts = _salvage(path, walk.complete_end, engine, batch_size, emit, progress)
        facts.update(truncated=True, truncated_at=walk.complete_end, stream_bytes=walk.stream_end)
    facts.update(
        byte_order=order.name,
        cpu_type_agrees=order.cpu_type_agrees,
        engine=engine,
        source_file=path.name,
    )
    return parts, tests, bins, facts


def _run(path: Path, name: str, engine: str, batch_size: int, emit, progress) -> tuple:
    normalizer = Normalizer(emit, source_file=name)
    try:
        for record_type, batch in read_batches(path, engine, batch_size):
            normalizer.feed(record_type, batch)
            if progress is not None and batch.num_rows:
                progress(batch["byte_offset"][-1].as_py())
        result = normalizer.finish()
    except StructureError as exc:
        offset = exc.offset
        if normalizer.first_unknown is not None and normalizer.first_unknown < offset:
            offset = normalizer.first_unknown
            raise StdfReadError(path, f"corrupt: record chain broken (unknown record, then {exc})", offset) from None
        raise StdfReadError(path, f"corrupt: {exc}", offset) from None
    return result


def _salvage(path: Path, end: int, engine: str, batch_size: int, emit, progress) -> tuple:
    """Parse the complete records of a truncated file, from a temporary copy of them."""
    with tempfile.NamedTemporaryFile(prefix="stdf-salvage-", suffix=".stdf") as prefix:
        write_prefix(path, end, prefix)
        try:
            parts, tests, bins, facts = _run(Path(prefix.name), path.name, engine, batch_size, emit, progress)
        except EngineError as exc:
            raise StdfReadError(path, f"cannot decode: {exc}", end) from None
        except StdfReadError as exc:
            raise StdfReadError(path, exc.reason, exc.offset) from None
    if facts["record_counts"].get("UNKNOWN"):
        raise StdfReadError(path, "corrupt: unknown records before a broken final record", end)
    return parts, tests, bins, facts


# --- conversion to Parquet ----------------------------------------------------------------------


class _ParquetSink:
    """Writes settled results to results.parquet in row groups of at least `group_rows`."""

    def __init__(self, path: Path, compression: str, group_rows: int = 1 << 18) -> None:
        self.path = path
        self.compression = compression
        self.group_rows = group_rows
        self.writer = None
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.rows = 0

    def __call__(self, table: pa.Table) -> None:
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.buffered >= self.group_rows:
            self._write()

    def _write(self) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, RESULTS_SCHEMA, compression=self.compression)
        if self.buffer:
            self.writer.write_table(pa.concat_tables(self.buffer), row_group_size=max(self.buffered, 1))
            self.rows += self.buffered
        self.buffer, self.buffered = [], 0

    def close(self) -> None:
        self._write()
        self.writer.close()

    def reset(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.path.unlink(missing_ok=True)
        self.buffer, self.buffered, self.rows = [], 0, 0


def _sha256_in_background(path: Path) -> Callable[[], str]:
    """Hash the input on another thread (hashlib releases the GIL) while it is parsed."""
    digest = hashlib.sha256()

    def work() -> None:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def result() -> str:
        thread.join()
        return digest.hexdigest()

    return result


def convert_stdf(
    path: str | Path,
    outdir: str | Path,
    engine: str = "arrow",
    batch_size: int = DEFAULT_BATCH_SIZE,
    compression: str = "zstd",
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Convert one STDF file into OUTDIR/{parts,results,tests,bins}.parquet + manifest.json.

    OUTDIR appears whole or not at all: everything is written to a temporary sibling folder
    that is renamed into place at the end (an existing OUTDIR is replaced).
    """
    import pyarrow.parquet as pq

    from .. import __version__

    started = time.perf_counter()
    path, outdir = Path(path), Path(outdir)
    if not path.is_file():
        raise StdfReadError(path, "no such file")
    outdir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.tmp-", dir=outdir.parent))
    try:
        sha256 = _sha256_in_background(path)
        sink = _ParquetSink(work / "results.parquet", compression)
        parts, tests, bins, facts = normalize_file(path, engine, batch_size, sink, sink.reset, progress)
        sink.close()
        rows = {"results": sink.rows}
        for name, table in (("parts", parts), ("tests", tests), ("bins", bins)):
            pq.write_table(table, work / f"{name}.parquet", compression=compression)
            rows[name] = table.num_rows
        manifest = {
            "input": {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": sha256()},
            "engine": engine,
            "rows": rows,
            "record_counts": facts.pop("record_counts"),
            "truncated": facts["truncated"],
            "file": facts,
            "outputs": [f"{name}.parquet" for name in TABLES],
            "seconds": round(time.perf_counter() - started, 3),
            "code_version": __version__,
            "versions": _library_versions(),
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _replace_dir(work, outdir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _replace_dir(new: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)


def _library_versions() -> dict:
    import stdf_convert

    return {"pyarrow": pa.__version__, "stdf_convert": stdf_convert.__version__}
