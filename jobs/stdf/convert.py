"""Conversion of one STDF file into the normalized tables: in memory (`read_stdf`) or as Parquet
written whole or not at all (`convert_stdf`), with the salvage of truncated files."""

from __future__ import annotations

import hashlib
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from jobs.files import json_text, remove_leftovers, staged_folder

from .engines import EngineError, read_batches
from .normalize import Normalizer
from .plausibility import ImplausibleContentError, Plausibility, StructureError
from .scratch import Scratch, plain_copy
from .source import (
    ByteOrder,
    StdfReadError,
    StreamWindow,
    compression_of,
    ends_inside_record,
    results_per_part,
    sniff_byte_order,
    walk_records,
    write_prefix,
)
from .tables import RESULTS_SCHEMA
from .walker import MispredictionError, PartWalker

TABLES = ("parts", "results", "tests", "bins")
DEFAULT_BATCH_SIZE = 0  # 0: ARROW_BATCH_SIZE for the arrow engine, else chosen per file by auto_batch_size()
# the arrow engine places results as their PTR batches arrive (see PartWalker), so it takes
# stdf-convert's own batch size: smaller batches cost the parser more time per record
ARROW_BATCH_SIZE = 1 << 16
PENDING_RESULTS = 1 << 19  # target number of results per batch of parts (see auto_batch_size)
RESULTS_PARQUET = {
    # Parquet's dictionary encoding pays only where Arrow already has dictionaries: on the numeric
    # columns it costs more time than it saves bytes (zstd compresses them better without it)
    "use_dictionary": ["kind", "test_txt"],
    # min/max of the test names (strings) is the costliest statistic, and no reader filters on them
    "write_statistics": [field.name for field in RESULTS_SCHEMA if field.name != "test_txt"],
}


def auto_batch_size(path: Path, order: str) -> int:
    """Records per batch: about PENDING_RESULTS results per batch of parts, within 1024..16384.

    Results wait until the batch holding their part's PRR arrives, so smaller batches let them
    settle sooner, while the parse runs; but every batch costs overhead, and result records
    come in batches of the same size. Results that wait long are spilled to disk.
    """
    per_part = results_per_part(path, order) or 1000.0
    size = 1 << int(np.log2(max(PENDING_RESULTS / max(per_part, 1.0), 1)))
    return int(min(max(size, 1024), 16384))


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


def read_stdf(
    path: str | Path,
    engine: str = "arrow",
    batch_size: int = DEFAULT_BATCH_SIZE,
    plausibility: Plausibility | None = None,
    scratch: Scratch | None = None,
) -> StdfTables:
    """Read a whole STDF file into the normalized tables (for files that fit in memory)."""
    sink = _MemorySink()
    parts, tests, bins, facts = normalize_file(
        path, engine, batch_size, sink, sink.reset, None, plausibility, scratch
    )
    return StdfTables(parts=parts, results=sink.table(), tests=tests, bins=bins, file=facts)


def normalize_file(
    path: str | Path,
    engine: str,
    batch_size: int,
    emit: Callable[[pa.Table], None],
    reset: Callable[[], None],
    progress: Callable[[int], None] | None = None,
    plausibility: Plausibility | None = None,
    scratch: Scratch | None = None,
) -> tuple[pa.Table, pa.Table, pa.Table, dict]:
    """Stream `path` through the normalizer; results go to `emit`, the rest is returned.

    A compressed file is decompressed once, into a plain copy in `scratch` that every reader
    uses (facts `decompressed`; `input_sha256`, the file's hash taken in the same pass). A
    truncated file is read again from its last complete record (after `reset()` has discarded
    what was emitted), so every complete part is kept and the open one is dropped.
    """
    path = Path(path)
    order = sniff_byte_order(path)  # junk is refused before anything is decompressed
    with plain_copy(path, scratch or Scratch()) as plain:
        try:
            parts, tests, bins, facts = _normalize_plain(
                plain.path, path.name, order, engine, batch_size, emit, reset, progress, plausibility
            )
        except StdfReadError as exc:  # name the file, not its copy
            raise StdfReadError(path, exc.reason, exc.offset) from None
    if plain.truncated and not facts["truncated"]:  # the copy ends on a record: the stream did not
        facts.update(truncated=True, truncated_at=facts["records_end"], stream_bytes=plain.stream_bytes)
    if plain.sha256:
        facts.update(decompressed=plain.facts(), input_sha256=plain.sha256)
    facts.update(
        byte_order=order.name,
        cpu_type_agrees=order.cpu_type_agrees,
        engine=engine,
        source_file=path.name,
    )
    return parts, tests, bins, facts


def _normalize_plain(
    path: Path, name: str, order: ByteOrder, engine: str, batch_size: int, emit, reset, progress, plausibility
) -> tuple[pa.Table, pa.Table, pa.Table, dict]:
    """`normalize_file` on plain bytes (`name`: the file's own name, for the tables)."""
    batch_size = batch_size or (ARROW_BATCH_SIZE if engine == "arrow" else auto_batch_size(path, order.order))
    try:
        parts, tests, bins, facts = _normalize(
            path, name, engine, batch_size, order.order, emit, reset, progress, plausibility
        )
        # a header cut short after the last record reads as a clean end to both parsers
        cut = ends_inside_record(path, facts["records_end"])
        facts.update(truncated=cut, truncated_at=facts["records_end"] if cut else None)
    except EngineError as exc:
        walk = walk_records(path, order.order)
        if not walk.truncated:
            where = walk.complete_end if walk.problem else None
            raise StdfReadError(path, f"cannot decode: {walk.problem or exc}", where) from None
        reset()
        parts, tests, bins, facts = _salvage(
            path, walk.complete_end, engine, batch_size, order.order, emit, reset, progress, plausibility
        )
        facts.update(truncated=True, truncated_at=walk.complete_end, stream_bytes=walk.stream_end)
    facts["batch_size"] = batch_size
    return parts, tests, bins, facts


def _normalize(
    path: Path, name: str, engine: str, batch_size: int, order: str, emit, reset, progress, plausibility
) -> tuple:
    """`_run` with the part walker (arrow engine); again without it if it mispredicted."""
    if engine != "arrow":
        return _run(path, name, engine, batch_size, emit, progress, plausibility)
    try:
        return _run(path, name, engine, batch_size, emit, progress, plausibility, walk_order=order)
    except MispredictionError:
        reset()  # results were placed in the walker's parts: place them again
        return _run(path, name, engine, batch_size, emit, progress, plausibility)


def _run(
    path: Path,
    name: str,
    engine: str,
    batch_size: int,
    emit,
    progress,
    plausibility: Plausibility | None,
    walk_order: str | None = None,
) -> tuple:
    window = StreamWindow(path) if walk_order else None
    walker = PartWalker(window, walk_order) if window else None
    normalizer = Normalizer(emit, source_file=name, walker=walker, plausibility=plausibility)
    try:
        for count, (record_type, batch) in enumerate(read_batches(path, engine, batch_size)):
            normalizer.feed(record_type, batch)
            if progress is not None and count % 64 == 0 and batch.num_rows:
                progress(batch["byte_offset"][-1].as_py())
        result = normalizer.finish()
    except ImplausibleContentError as exc:  # judged on the records, not on the parts: no second try
        raise StdfReadError(path, str(exc), exc.offset) from None
    except StructureError as exc:
        if walker is not None and walker.covered >= 0:  # maybe the walker's doing: the parser's parts decide
            raise MispredictionError(str(exc)) from None
        offset = exc.offset
        if normalizer.first_unknown is not None and normalizer.first_unknown < offset:
            offset = normalizer.first_unknown
            raise StdfReadError(
                path, f"corrupt: record chain broken (unknown record, then {exc})", offset
            ) from None
        raise StdfReadError(path, f"corrupt: {exc}", offset) from None
    finally:
        normalizer.close()
        if window is not None:
            window.close()
    return result


def _salvage(
    path: Path, end: int, engine: str, batch_size: int, order: str, emit, reset, progress, plausibility
) -> tuple:
    """Parse the complete records of a truncated file, from a temporary copy of them."""
    with tempfile.NamedTemporaryFile(prefix="stdf-salvage-", suffix=".stdf") as prefix:
        write_prefix(path, end, prefix)
        try:
            parts, tests, bins, facts = _normalize(
                Path(prefix.name), path.name, engine, batch_size, order, emit, reset, progress, plausibility
            )
        except EngineError as exc:
            raise StdfReadError(path, f"cannot decode: {exc}", end) from None
        except StdfReadError as exc:
            raise StdfReadError(path, exc.reason, exc.offset) from None
    if facts["record_counts"].get("UNKNOWN"):
        raise StdfReadError(path, "corrupt: unknown records before a broken final record", end)
    return parts, tests, bins, facts


# --- conversion to Parquet ----------------------------------------------------------------------


class _ParquetSink:
    """Writes settled results to results.parquet in row groups of at least `group_rows`.

    Encoding and compression run on a writer thread (Parquet releases the GIL), so they overlap
    with normalizing the next batches; the queue is short, which bounds the memory in flight.
    """

    def __init__(self, path: Path, compression: str, group_rows: int = 1 << 18) -> None:
        self.path = path
        self.compression = compression
        self.group_rows = group_rows
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.rows = 0
        self._start()

    def _start(self) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.finished = False
        self.thread = threading.Thread(target=self._write_loop, name="parquet-writer", daemon=True)
        self.thread.start()

    def _write_loop(self) -> None:
        import pyarrow.parquet as pq

        options = {"compression": self.compression, **RESULTS_PARQUET}
        writer = None
        while (table := self.queue.get()) is not None:
            if self.error is None:
                try:
                    writer = writer or pq.ParquetWriter(self.path, RESULTS_SCHEMA, **options)
                    writer.write_table(table, row_group_size=table.num_rows)
                except BaseException as exc:  # re-raised on the caller's thread in close()
                    self.error = exc
        if writer is not None:
            writer.close()
        elif self.error is None and self.finished:
            pq.write_table(RESULTS_SCHEMA.empty_table(), self.path, **options)

    def __call__(self, table: pa.Table) -> None:
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.buffered >= self.group_rows:
            self._flush()

    def _flush(self) -> None:
        if self.buffer:
            self.queue.put(pa.concat_tables(self.buffer))
            self.rows += self.buffered
        self.buffer, self.buffered = [], 0

    def close(self) -> None:
        self._flush()
        self.finished = True
        self._stop()
        if self.error is not None:
            raise self.error

    def _stop(self) -> None:
        self.queue.put(None)
        self.thread.join()

    def abort(self) -> None:
        """Stop writing and remove what was written (the conversion failed)."""
        self.buffer, self.buffered, self.rows = [], 0, 0
        self._stop()
        self.path.unlink(missing_ok=True)

    def reset(self) -> None:
        self.abort()
        self._start()


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
    lineage: dict | None = None,
    sha256: str | None = None,
    plausibility: Plausibility | None = None,
    scratch: Scratch | None = None,
) -> dict:
    """Convert one STDF file into OUTDIR/{parts,results,tests,bins}.parquet + manifest.json.

    OUTDIR appears whole or not at all: everything is written to a temporary sibling folder
    that is renamed into place at the end (an existing OUTDIR is replaced). A caller that has
    already hashed the input passes `sha256`; otherwise a compressed file is hashed as it is
    decompressed (into `scratch`, see normalize_file) and a plain one while it is parsed.
    """
    import pyarrow.parquet as pq

    from jobs import __version__

    started = time.perf_counter()
    path, outdir = Path(path), Path(outdir)
    if not path.is_file():
        raise StdfReadError(path, "no such file")
    remove_leftovers(outdir.parent, STALE_WORK_SECONDS, prefix=f".{outdir.name}.")
    with staged_folder(outdir) as work:
        sink = _ParquetSink(work / "results.parquet", compression)
        plain = compression_of(path) == "none"
        digest = _sha256_in_background(path) if plain and not sha256 else None  # known: not hashed again
        try:
            parts, tests, bins, facts = normalize_file(
                path, engine, batch_size, sink, sink.reset, progress, plausibility, scratch
            )
        except BaseException:
            sink.abort()
            raise
        sink.close()
        rows = {"results": sink.rows}
        for name, table in (("parts", parts), ("tests", tests), ("bins", bins)):
            pq.write_table(table, work / f"{name}.parquet", compression=compression)
            rows[name] = table.num_rows
        hashed = facts.pop("input_sha256", None)
        decompressed = facts.pop("decompressed", None)
        manifest = {
            "input": {
                "path": str(path.resolve()),
                "bytes": path.stat().st_size,
                "sha256": sha256 or hashed or digest(),
                **({"decompressed": decompressed} if decompressed else {}),
            },
            "engine": engine,
            "rows": rows,
            "record_counts": facts.pop("record_counts"),
            "truncated": facts["truncated"],
            "structure": facts.pop("structure"),
            "file": facts,
            "outputs": [f"{name}.parquet" for name in TABLES],
            "seconds": round(time.perf_counter() - started, 3),
            "code_version": __version__,
            "versions": _library_versions(),
            **(lineage or {}),
        }
        (work / "manifest.json").write_text(json_text(manifest))
    return manifest


STALE_WORK_SECONDS = 6 * 3600  # no conversion takes this long: an older work folder was abandoned


def _library_versions() -> dict:
    import stdf_convert

    return {"pyarrow": pa.__version__, "stdf_convert": stdf_convert.__version__}
