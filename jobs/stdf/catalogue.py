"""The catalogue of tests of each kind (PTR, FTR, MPR): defaults from each test's first record,
its name and how often it ran; the tests table is built from it, result rows find their test
name through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass
class CatalogueEntry:
    kind: str
    name: str
    units: str | None
    lo_limit: float | None
    hi_limit: float | None
    res_scal: int | None


LOOKUP_LIMIT = 1 << 20  # the largest test number for a lookup table (4 MB)


class Catalogue:
    """The tests of one kind (PTR, FTR, MPR): each test's defaults from its first record (STDF:
    later records default to it), its name, and how often it ran. Arrays stay sorted by test
    number, so looking up millions of results is one searchsorted."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.tests: dict[int, CatalogueEntry] = {}
        self.numbers = np.zeros(0, np.uint32)
        self.executions = np.zeros(0, np.int64)
        self.names = pa.array([], pa.string())
        self.nameless: set[int] = set()
        self.lookup: np.ndarray | None = None  # test number -> position in `numbers`, if not too big

    def update(self, batch: pa.Table, test_num: np.ndarray) -> None:
        unique, first, counts = np.unique(test_num, return_index=True, return_counts=True)
        new = ~np.isin(unique, self.numbers)
        if new.any():
            columns = [c for c in FIRST_RECORD_COLUMNS if c in batch.schema.names]
            for number, row in zip(
                unique[new], batch.select(columns).take(first[new]).to_pylist(), strict=True
            ):
                self.tests[int(number)] = first_record_defaults(self.kind, row)
                if not self.tests[int(number)].name:
                    self.nameless.add(int(number))
            self._rebuild()
        if self.nameless:
            self._find_names(batch, test_num)
        self.executions[self.index_of(unique)] += counts

    def index_of(self, test_num: np.ndarray) -> np.ndarray:
        """Positions of known test numbers in `numbers`."""
        if self.lookup is not None:
            return self.lookup[test_num]
        return np.searchsorted(self.numbers, test_num)

    def _rebuild(self) -> None:
        old = dict(zip(self.numbers.tolist(), self.executions.tolist(), strict=True))
        self.numbers = np.array(sorted(self.tests), np.uint32)
        self.executions = np.array([old.get(n, 0) for n in self.numbers.tolist()], np.int64)
        # test numbers are often small: then a table lookup is far cheaper than a binary search
        self.lookup = None
        if self.numbers[-1] < LOOKUP_LIMIT:
            self.lookup = np.zeros(int(self.numbers[-1]) + 1, np.int32)
            self.lookup[self.numbers] = np.arange(len(self.numbers), dtype=np.int32)
        # no nulls inside a dictionary (pandas cannot make categories of them): a test without
        # a name gets "" here and a null index in the results
        self.names = pa.array([self.tests[n].name for n in self.numbers.tolist()], pa.string())

    def _find_names(self, batch: pa.Table, test_num: np.ndarray) -> None:
        """A test whose first record had no TEST_TXT takes the first name a later record gives."""
        rows = np.flatnonzero(np.isin(test_num, list(self.nameless)))
        found = False
        for number, text in zip(
            test_num[rows].tolist(), batch["TEST_TXT"].take(rows).to_pylist(), strict=True
        ):
            if text and number in self.nameless:
                self.tests[number].name = text
                self.nameless.discard(number)
                found = True
        if found:
            self._rebuild()

    def rows(self) -> list[dict]:
        return [
            {"test_num": number, "kind": self.kind, "test_txt": test.name or None, "units": test.units,
             "lo_limit": test.lo_limit, "hi_limit": test.hi_limit, "res_scal": test.res_scal,
             "executions": int(self.executions[i])}
            for i, (number, test) in enumerate(sorted(self.tests.items()))
        ]  # fmt: skip


FIRST_RECORD_COLUMNS = ("TEST_TXT", "OPT_FLAG", "LO_LIMIT", "HI_LIMIT", "UNITS", "RES_SCAL")


def first_record_defaults(kind: str, row: dict) -> CatalogueEntry:
    """A test's catalogue entry from its first record, honouring OPT_FLAG.

    OPT_FLAG bits: 0 RES_SCAL invalid, 4/5 LO/HI_LIMIT invalid, 6/7 no low/high limit. A record
    that stops before OPT_FLAG carries no limits at all.
    """
    opt = row.get("OPT_FLAG")
    opt_byte = opt[0] if opt else None
    lo = row.get("LO_LIMIT")
    hi = row.get("HI_LIMIT")
    scal = row.get("RES_SCAL")
    if opt_byte is None:
        lo = hi = scal = None
    else:
        lo = None if opt_byte & 0x50 else lo
        hi = None if opt_byte & 0xA0 else hi
        scal = None if opt_byte & 0x01 else scal
    return CatalogueEntry(kind=kind, name=row.get("TEST_TXT") or "", units=row.get("UNITS") or None,
                          lo_limit=lo, hi_limit=hi, res_scal=scal)  # fmt: skip
