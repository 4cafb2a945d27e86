"""What the normalizer refuses: record sequences that break STDF's rules (`StructureError`), and
content no tester writes (`ContentCheck`, within the limits of `Plausibility`, the [stdf]
settings of the same names).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from .records import max_length
from .tables import RESULT_KINDS
from .walker import PART_MARKS


class StructureError(Exception):
    """The record sequence breaks STDF's rules (a sign of corruption); carries the byte offset."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class ImplausibleContentError(StructureError):
    """Valid record headers over content no tester writes (zeros, junk): refused early."""


@dataclass(frozen=True)
class Plausibility:
    """When a file's content is refused as implausible (the [stdf] settings of the same names)."""

    max_bytes_without_parts: int = 64 << 20  # no PIR, PRR or result in this many bytes
    max_unknown_share: float = 0.5  # of the records: unknown types or empty (EPS aside)
    min_records: int = 10_000  # the share is judged once this many records were read


class ContentCheck:
    """Judges the records as they arrive: their byte extent, how many are unknown or empty, how
    many belong to parts, and which are longer than their type allows."""

    def __init__(self, limits: Plausibility) -> None:
        self.limits = limits
        self.bytes_read = 0
        self.empty_or_unknown = 0
        self.implausible: Counter[str] = Counter()
        self.part_records = 0  # PIRs, PRRs and results delivered

    def check(self, record_type: str, batch: pa.RecordBatch, records: int, walked: bool) -> pa.RecordBatch:
        """Refuse content no tester writes, before parsing much of it; drop records longer than
        their type allows (junk under a valid header: its fields would be garbage). `records`:
        how many were read so far, this batch included; `walked`: the PartWalker has found parts."""
        limits = self.limits
        rec_len = batch["rec_len"]
        self.bytes_read = max(self.bytes_read, batch["byte_offset"][-1].as_py() + 4 + rec_len[-1].as_py())
        if record_type == "UNKNOWN":
            self.empty_or_unknown += batch.num_rows
        elif record_type != "EPS":  # an EPS has no fields
            self.empty_or_unknown += pc.sum(pc.equal(rec_len, 0)).as_py() or 0
        if record_type in PART_MARKS.values() or record_type in RESULT_KINDS:
            self.part_records += batch.num_rows
        if records >= limits.min_records and self.empty_or_unknown > limits.max_unknown_share * records:
            raise ImplausibleContentError(
                f"implausible content: {self.empty_or_unknown} of the first {records} records are of no "
                f"known type or empty (zeros or junk after a valid header)",
                self.bytes_read,
            )
        if self.bytes_read > limits.max_bytes_without_parts and not self.part_records and not walked:
            raise ImplausibleContentError(
                f"implausible content: no part (PIR, PRR or test result) in the first {self.bytes_read} "
                f"bytes (limit [stdf] max_bytes_without_parts = {limits.max_bytes_without_parts})",
                self.bytes_read,
            )
        longest = max_length(record_type)
        if longest is None or (pc.max(rec_len).as_py() or 0) <= longest:
            return batch
        junk = pc.greater(rec_len, longest)
        self.implausible[record_type] += pc.sum(junk).as_py()
        return batch.filter(pc.invert(junk)) if record_type in RESULT_KINDS else batch
