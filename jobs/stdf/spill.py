"""Results waiting for their parts: in memory up to a limit, beyond it in Arrow IPC files."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa


class Spill:
    """Results waiting for their parts, in memory up to `limit` rows and beyond that on disk.

    A file with few, huge parts (thousands of tests per die) can keep millions of results
    waiting for a batch of PRRs; spilling them to Arrow IPC files keeps memory flat.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.memory: list[pa.Table] = []
        self.in_memory = 0
        self.files: list[Path] = []
        self.folder: tempfile.TemporaryDirectory | None = None

    def add(self, table: pa.Table) -> None:
        self.memory.append(table)
        self.in_memory += table.num_rows
        if self.in_memory > self.limit:
            self.folder = self.folder or tempfile.TemporaryDirectory(prefix="stdf-spill-")
            path = Path(self.folder.name) / f"{len(self.files)}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, self.memory[0].schema) as writer:
                for chunk in self.memory:
                    writer.write_table(chunk)
            self.files.append(path)
            self.memory, self.in_memory = [], 0

    def drain(self) -> Iterator[pa.Table]:
        """Everything waiting, oldest first, in chunks of bounded size; the spill is emptied."""
        files, memory = self.files, self.memory
        self.files, self.memory, self.in_memory = [], [], 0
        for path in files:
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_stream(source).read_all()
            yield table
            path.unlink()
        if memory:
            yield pa.concat_tables(memory) if len(memory) > 1 else memory[0]

    def close(self) -> None:
        if self.folder is not None:
            self.folder.cleanup()
            self.folder = None
