"""The arrow engine's `PartWalker`: the PIRs and PRRs between the PTR batches, read off the
decompressed stream by their record headers (`PART_MARKS`), so results can be placed long before
the parser's own batch of PIRs and PRRs arrives.
"""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa

from .columns import to_numpy
from .source import StreamWindow

PART_MARKS = {(5, 10): "PIR", (5, 20): "PRR"}  # (REC_TYP, REC_SUB)


class MispredictionError(Exception):
    """The walker's PIRs and PRRs differ from the parser's: the file must be normalized again."""


class PartWalker:
    """Finds the PIRs and PRRs between the PTRs the parser delivers, long before their own batches.

    The parser hands over each record type in batches of its own; in a file with few parts of
    thousands of tests each, the batch of PIRs and PRRs comes only at the end, and no result
    could be placed until then. But each PTR batch says where its records lie (byte offset,
    length, sequence number), and the few records between them are read off the decompressed
    stream by their headers. `Normalizer.finish` checks the findings against the parser's own
    PIRs and PRRs. The walker gives up (and the parser's batches take over) where the bytes
    between two PTRs do not add up with their sequence numbers.
    """

    def __init__(self, window: StreamWindow, order: str) -> None:
        self.window = window
        self.header = struct.Struct(order + "HBB")
        self.alive = True
        self.covered = -1  # every record up to this sequence number has been accounted for
        self.end = 0  # byte offset just past that record
        self.found: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"PIR": [], "PRR": []}
        self.delivered: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"PIR": [], "PRR": []}

    def walk(self, batch: pa.RecordBatch) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        """(sequence numbers, site keys) of the PIRs and PRRs before the batch's last PTR, or None
        (and the walker stops) if the records between the PTRs cannot be accounted for."""
        seq = to_numpy(batch["sequence_number"], np.int64)
        begin = to_numpy(batch["byte_offset"], np.int64)
        end = begin + 4 + to_numpy(batch["rec_len"], np.int64)
        seq_before = np.concatenate([[self.covered], seq[:-1]])
        end_before = np.concatenate([[self.end], end[:-1]])
        marks: dict[str, tuple[list[int], list[int]]] = {"PIR": ([], []), "PRR": ([], [])}
        for i in np.flatnonzero((seq - seq_before != 1) | (begin != end_before)).tolist():
            if not self._walk_gap(int(end_before[i]), int(begin[i]), int(seq_before[i]), int(seq[i]), marks):
                self.alive = False
                return None
        self.covered, self.end = int(seq[-1]), int(end[-1])
        self.window.release(self.end)
        found = {kind: (np.array(s, np.uint64), np.array(k, np.uint64)) for kind, (s, k) in marks.items()}
        for kind, rows in found.items():
            self.found[kind].append(rows)
        return found

    def _walk_gap(self, begin: int, end: int, seq_before: int, seq_after: int, marks: dict) -> bool:
        """Follow the record headers from byte `begin` to `end`; True if they end exactly there
        and are as many as the sequence numbers say."""
        data = self.window.read(begin, end)
        if data is None:
            return False
        offset, seq = 0, seq_before + 1
        while offset + 4 <= len(data):
            rec_len, typ, sub = self.header.unpack_from(data, offset)
            if offset + 4 + rec_len > len(data):
                return False
            if kind := PART_MARKS.get((typ, sub)):
                head = data[offset + 4] if rec_len >= 1 else 0  # missing fields read as 0, as in site_key
                site = data[offset + 5] if rec_len >= 2 else 0
                marks[kind][0].append(seq)
                marks[kind][1].append(head << 8 | site)
            offset += 4 + rec_len
            seq += 1
        return offset == len(data) and seq == seq_after

    def check(self) -> None:
        """Raise MispredictionError unless the parser delivered exactly the PIRs and PRRs found."""
        for kind in PART_MARKS.values():
            found_seq, found_site = _concat(self.found[kind])
            seq, site = _concat(self.delivered[kind])
            upto = seq.astype(np.int64) <= self.covered
            if not (np.array_equal(found_seq, seq[upto]) and np.array_equal(found_site, site[upto])):
                raise MispredictionError(f"the {kind}s found between the PTRs differ from the parser's")


def _concat(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    return np.concatenate([seq for seq, _ in rows]), np.concatenate([site for _, site in rows])
