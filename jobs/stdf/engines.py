"""The two reading engines, behind one interface: a stream of (record type, Arrow batch).

Both engines yield batches with stdf-convert's column names and types, limited to the columns
the normalizer uses, so everything after this point is shared and the two engines can be
compared table for table.

- `arrow` streams stdf-convert's Rust parser (`stdf_convert.batches`), which decodes on a
  background thread without the GIL while we normalize the previous batch.
- `pystdf` runs the pure-Python reference parser and builds the same batches from its records.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from .records import KNOWN_RECORD_TYPES
from .source import StdfReadError, compression_of, open_stream, sniff_byte_order, stored_stream_size

Batch = tuple[str, pa.RecordBatch]
ENGINES = ("arrow", "pystdf")

# Columns the normalizer reads, per record type; every batch also has sequence_number and
# byte_offset. Record types not listed are only counted.
COLUMNS: dict[str, tuple[str, ...]] = {
    record_type: tuple(names.split())
    for record_type, names in {
        "FAR": "CPU_TYPE STDF_VER",
        "MIR": "SETUP_T START_T STAT_NUM LOT_ID PART_TYP NODE_NAM TSTR_TYP JOB_NAM JOB_REV SBLOT_ID "
        "OPER_NAM EXEC_TYP EXEC_VER TEST_COD TST_TEMP FACIL_ID FLOOR_ID PROC_ID FLOW_ID",
        "MRR": "FINISH_T",
        "WIR": "HEAD_NUM START_T WAFER_ID",
        "WRR": "HEAD_NUM FINISH_T PART_CNT WAFER_ID",
        "PIR": "HEAD_NUM SITE_NUM",
        "PRR": "HEAD_NUM SITE_NUM PART_FLG NUM_TEST HARD_BIN SOFT_BIN X_COORD Y_COORD TEST_T PART_ID "
        "PART_TXT",
        "PTR": "TEST_NUM HEAD_NUM SITE_NUM TEST_FLG PARM_FLG RESULT TEST_TXT OPT_FLAG RES_SCAL LO_LIMIT "
        "HI_LIMIT UNITS",
        "FTR": "TEST_NUM HEAD_NUM SITE_NUM TEST_FLG TEST_TXT",
        "MPR": "TEST_NUM HEAD_NUM SITE_NUM TEST_FLG PARM_FLG RTN_RSLT RTN_INDX TEST_TXT OPT_FLAG RES_SCAL "
        "LO_LIMIT HI_LIMIT UNITS",
        "HBR": "HEAD_NUM SITE_NUM HBIN_NUM HBIN_CNT HBIN_PF HBIN_NAM",
        "SBR": "HEAD_NUM SITE_NUM SBIN_NUM SBIN_CNT SBIN_PF SBIN_NAM",
        "TSR": "HEAD_NUM SITE_NUM TEST_NUM TEST_TYP TEST_NAM",
        "PCR": "HEAD_NUM SITE_NUM PART_CNT",
        "UNKNOWN": "rec_typ rec_sub",
    }.items()
}
POSITION = ("sequence_number", "byte_offset", "rec_len")


@functools.cache
def _schema(record_type: str) -> pa.Schema:
    import stdf_convert

    full = stdf_convert.schema(record_type)
    return pa.schema([full.field(name) for name in POSITION + COLUMNS.get(record_type, ())])


def read_batches(path: str | Path, engine: str, batch_size: int) -> Iterator[Batch]:
    """Stream a file's records as (record type, batch) in the engine-independent layout."""
    if engine == "arrow":
        return _arrow_batches(path, batch_size)
    if engine == "pystdf":
        return _pystdf_batches(path, batch_size)
    raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")


def _arrow_batches(path: str | Path, batch_size: int, prefetch_rows: int = 1 << 20) -> Iterator[Batch]:
    """stdf-convert's batches, pulled ahead on a thread into a queue of about `prefetch_rows` records.

    The normalizer works in bursts (when a batch of parts closes); stdf-convert's own hand-over
    queue is short, so without this queue the parser would stall during each burst.
    """
    import stdf_convert

    ahead: queue.Queue = queue.Queue(maxsize=max(8, prefetch_rows // batch_size))
    stop = threading.Event()

    def offer(item) -> bool:
        """Queue an item unless the consumer has gone; False once it has."""
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pull() -> None:
        try:
            with _named_by_content(Path(path)) as named:
                for record_type, batch in stdf_convert.batches(named, batch_size=batch_size):
                    if not offer((record_type, batch.select(list(POSITION + COLUMNS.get(record_type, ()))))):
                        return
            offer(None)
        except stdf_convert.StdfError as exc:
            offer(EngineError(str(exc)))
        except BaseException as exc:  # handed to the consumer, never lost on this thread
            offer(exc)

    thread = threading.Thread(target=pull, name="stdf-convert-prefetch", daemon=True)
    thread.start()
    try:
        while (item := ahead.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


SUFFIX = {"gzip": ".gz", "bzip2": ".bz2", "zip": ".zip", "none": ".stdf"}


@contextlib.contextmanager
def _named_by_content(path: Path) -> Iterator[Path]:
    """`path`, or a symlink to it whose suffix matches its content (stdf-convert goes by name)."""
    kind = compression_of(path)
    by_name = {suffix: name for name, suffix in SUFFIX.items()}.get(path.suffix.lower(), "none")
    if kind == by_name:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="stdf-") as folder:
        link = Path(folder) / (path.stem + SUFFIX[kind])
        link.symlink_to(path.resolve())
        yield link


class EngineError(Exception):
    """The engine stopped on bad input; the caller turns it into a StdfReadError with an offset."""


# --- pystdf -----------------------------------------------------------------------------------


def _pystdf_batches(path: str | Path, batch_size: int) -> Iterator[Batch]:
    """Run pystdf's parser and regroup its records into batches like stdf-convert's.

    pystdf only knows the byte order from CPU_TYPE, so a file whose CPU_TYPE is wrong is
    refused here with a clear error rather than decoded into garbage.
    """
    order = sniff_byte_order(path)
    if not order.cpu_type_agrees:
        raise StdfReadError(
            path,
            f"the pystdf engine cannot read this file: CPU_TYPE {order.cpu_type} does not match its "
            f"{order.name} FAR; use --engine arrow",
            0,
        )
    collector = _Collector(batch_size)
    parser = _make_parser(open_stream(path), collector)
    try:
        parser.auto_detect_endian()
        while True:  # pystdf parses a given number of records per call: stream batches between calls
            parser.parse_records(count=20_000)
            yield from collector.take_ready()
            if parser.eof:
                break
        parser.complete()
    except EOFError:  # a compressed stream cut short: like a truncated file
        parser.incomplete_tail = True
    except UnicodeDecodeError as exc:
        raise StdfReadError(
            path,
            f"the pystdf engine cannot read this file: non-ASCII text ({exc.reason})",
            parser.last_offset,
        ) from None
    except Exception as exc:  # pystdf raises bare exceptions of many kinds on input it cannot read
        if _runs_past_end(path, parser.last_offset + 4 + parser.last_len):  # a cut-off last record
            parser.incomplete_tail = True
        else:
            raise _unreadable_by_pystdf(path, exc, parser.last_offset) from None
    finally:
        parser.inp.close()
    # pystdf hands on a cut-off last record as if it were a short one; we treat it as lost
    collector.finish(keep_last=not parser.incomplete_tail)
    yield from collector.take_ready()
    if parser.incomplete_tail:
        raise EngineError("pystdf: end of stream inside the last record")


def _runs_past_end(path: str | Path, record_end: int) -> bool:
    size = stored_stream_size(path)
    return size is not None and compression_of(path) != "gzip" and record_end > size


def _unreadable_by_pystdf(path: str | Path, exc: Exception, offset: int) -> StdfReadError:
    return StdfReadError(
        path,
        f"the pystdf engine cannot read this file: pystdf raised {type(exc).__name__} ({exc}) "
        f"in the record at byte {offset}; use --engine arrow",
        offset,
    )


class _Collector:
    """Accumulates pystdf records per type and cuts them into Arrow batches.

    The newest record is held back until the next one arrives, because a truncated file's
    last record must be dropped, and only the end of the stream tells.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.rows: dict[str, list[tuple]] = {}
        self.ready: list[Batch] = []
        self.held: tuple[str, tuple] | None = None
        self.sequence = 0

    def add(self, record_type: str, offset: int, rec_len: int, values: tuple) -> None:
        if self.held is not None:
            self._commit(*self.held)
        self.held = (record_type, (self.sequence, offset, rec_len, *values))
        self.sequence += 1

    def _commit(self, record_type: str, row: tuple) -> None:
        rows = self.rows.setdefault(record_type, [])
        rows.append(row)
        if len(rows) >= self.batch_size:
            self._flush(record_type)

    def _flush(self, record_type: str) -> None:
        rows = self.rows.pop(record_type, [])
        if rows:
            schema = _schema(record_type)
            columns = list(zip(*rows, strict=True))
            arrays = [pa.array(col, type=field.type) for col, field in zip(columns, schema, strict=True)]
            self.ready.append((record_type, pa.RecordBatch.from_arrays(arrays, schema=schema)))

    def take_ready(self) -> list[Batch]:
        ready, self.ready = self.ready, []
        return ready

    def finish(self, keep_last: bool) -> None:
        if self.held is not None and keep_last:
            self._commit(*self.held)
        self.held = None
        for record_type in list(self.rows):
            self._flush(record_type)


def _make_parser(stream, collector: _Collector):
    """A pystdf Parser that reports every record, with its byte offset, to the collector."""
    from pystdf import V4
    from pystdf.IO import Parser

    by_type = {(r.typ, r.sub): r for r in V4.records}

    class OffsetParser(Parser):
        def __init__(self) -> None:
            super().__init__(inp=stream)
            self.last_offset = 0
            self.last_len = 0
            self.incomplete_tail = False

        def header(self, header) -> None:
            self.last_offset = self.inp.tell() - 4
            self.last_len = header.len
            key = (header.typ, header.sub)
            if key not in by_type:  # pystdf skips it: count it under the name stdf-convert gives it
                name = KNOWN_RECORD_TYPES.get(key, "UNKNOWN")
                values = (header.typ, header.sub) if name == "UNKNOWN" else ()
                collector.add(name, self.last_offset, header.len, values)

        def send(self, data) -> None:
            record_type, fields = data
            name = type(record_type).__name__.upper()
            collector.add(
                name, self.last_offset, self.last_len, _values(name, record_type.fieldNames, fields)
            )

        def complete(self) -> None:
            end = self.inp.tell()
            self.incomplete_tail = end < self.last_offset + 4 + self.last_len

    return OffsetParser()


def _values(name: str, field_names: list[str], fields: list) -> tuple:
    out = []
    for i, arrow_type in _field_plan(name, tuple(field_names)):
        value = fields[i] if i is not None and i < len(fields) else None
        out.append(_convert(value, arrow_type))
    return tuple(out)


@functools.cache
def _field_plan(name: str, field_names: tuple[str, ...]) -> list[tuple[int | None, pa.DataType]]:
    """For each column we keep: its index among pystdf's fields and its Arrow type."""
    index = {f: i for i, f in enumerate(field_names)}
    schema = _schema(name)
    return [(index.get(column), schema.field(column).type) for column in COLUMNS.get(name, ())]


def _convert(value, arrow_type: pa.DataType):
    """pystdf's Python value in the shape stdf-convert gives the same field."""
    if value is None:
        return None
    if pa.types.is_binary(arrow_type):  # B1: pystdf gives an int
        return bytes([value]) if isinstance(value, int) else bytes(value)
    if pa.types.is_string(arrow_type) and isinstance(value, bytes):  # C1
        return value.decode("latin-1")
    return value
