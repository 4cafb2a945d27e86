"""Helpers the tests share: the repo and shared/ paths, luigi.cfg values for a block, a free port,
the run history read back (each task ran once), and readers that compare the STDF engines."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import luigi.configuration

from jobs.ops.history import connect

REPO = Path(__file__).resolve().parents[1]

# The tests write STDF files just before converting them, whole: no waiting for them to settle
# (tests/test_backoff.py sets [backoff] settle_seconds itself).
luigi.configuration.get_config().set("backoff", "settle_seconds", "0")
SHARED_STDF = REPO.parent / "shared" / "stdf"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SORT_KEYS = ("part_index", "kind", "test_num", "pin_index", "bin_type", "head_num", "site_num", "bin_num")


def read_pystdf(path: Path) -> list[tuple[str, dict]]:
    """Every record plain pystdf 1.4 reads from a file, as (record type, fields)."""
    from pystdf.IO import Parser

    from jobs.stdf.source import open_stream

    records: list[tuple[str, dict]] = []

    class Sink:
        def before_begin(self, source: object) -> None: ...
        def before_complete(self, source: object) -> None: ...
        def before_cancel(self, source: object, exc: object) -> None: ...

        def before_send(self, source: object, data: tuple) -> None:
            kind, fields = data
            records.append((type(kind).__name__.upper(), dict(zip(kind.fieldNames, fields, strict=True))))

    with open_stream(path) as stream:
        parser = Parser(inp=stream)
        parser.addSink(Sink())
        parser.parse()
    return records


def canonical(table):
    """A table with dictionary columns decoded and rows in a fixed order, for comparing engines.

    Results are written as their parts settle, and the two engines deliver record batches at
    different moments, so the same rows can come in a different order.
    """
    import pyarrow as pa

    decoded = table.cast(
        pa.schema(
            [
                pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                for f in table.schema
            ]
        )
    )
    keys = [name for name in SORT_KEYS if name in decoded.column_names]
    return decoded.sort_by([(k, "ascending") for k in keys])


@contextlib.contextmanager
def luigi_settings(**sections: dict[str, object]) -> Iterator[None]:
    """Set luigi.cfg values for a block (`paths={"root": ...}`), then restore the sections."""
    import luigi.configuration

    config = luigi.configuration.get_config()
    saved = {s: dict(config.items(s)) if config.has_section(s) else None for s in sections}
    try:
        for section, values in sections.items():
            for key, value in values.items():
                config.set(section, key, str(value))
        yield
    finally:
        for section, values in saved.items():
            config.remove_section(section)
            if values is not None:
                config.add_section(section)
                for key, value in values.items():
                    config.set(section, key, value)


def runs(root: Path) -> list[dict]:
    with contextlib.closing(connect(root / "history" / "runs.sqlite")) as con:  # schema made if new
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM runs ORDER BY id")]


def assert_each_task_ran_once(root: Path) -> list[dict]:
    """Every task that did work did it once (so never twice at the same time); no row is left
    RUNNING (a task suspended for its dynamic dependencies is SUSPENDED until it runs again)."""
    rows = runs(root)
    assert {r["status"] for r in rows} <= {"DONE", "SKIPPED", "SUSPENDED"}, Counter(r["status"] for r in rows)
    ran = Counter(r["task_id"] for r in rows if r["status"] == "DONE")
    assert ran and set(ran.values()) == {1}, [t for t, n in ran.items() if n > 1]
    assert {r["task_id"] for r in rows} == set(ran)  # every skipped or suspended task ran somewhere
    return rows
