"""Where results fall among the parts: the PIR/PRR bookkeeping (`Parts`), its placement rules
and the structure notes that count which rule each file needed (the rule table is in
jobs/stdf/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Placement:
    """Where results fall among the parts (see `Parts.place`)."""

    part: np.ndarray  # part index (PRR ordinal), -1 where no PRR closes the result (yet)
    closed_at: np.ndarray  # sequence number of the PRR closing that part; inf if not seen yet
    in_pir: np.ndarray  # a PIR on the result's head/site opened its part before the result
    by_fallback: np.ndarray  # head/site matched no part; placed in the file's only open part


@dataclass
class Parts:
    """PIR/PRR bookkeeping. A part is what a PRR closes; the rules, for the structures that real
    testers write (see jobs/stdf/README.md):

    - a result belongs to the next PRR on its own head and site: the usual PIR ... PRR, a part
      without PIR (results since the previous PRR on that head/site, or the file start) and
      results written before their part's PIR all follow from it;
    - a part's PIR is the last PIR on its head/site since the previous PRR there; PIRs no PRR
      claims are parts never closed (dropped and counted), like results no PRR closes;
    - records whose head/site no PRR ever names (synthetic files, testers that number heads
      oddly) go to the file's only open part, when exactly one is open, and are counted.
    Part indices are PRR ordinals, so a part's index is known the moment its PRR arrives.
    """

    pir_by_site: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # seq, index
    prr_by_site: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # seq, index
    pir_wm: float = -1.0  # every PIR with a sequence number <= this has arrived
    all_pir: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    all_prr: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))

    def add(self, record_type: str, seq: np.ndarray, site: np.ndarray) -> None:
        """PIRs or PRRs (sequence numbers, site keys), the next ones in file order."""
        if record_type == "PIR":
            self.all_pir = _add_by_site(self.pir_by_site, self.all_pir, seq, site)
            self.pir_wm = float(seq[-1]) if len(seq) else self.pir_wm
        else:
            self.all_prr = _add_by_site(self.prr_by_site, self.all_prr, seq, site)

    def place(self, site: np.ndarray, seq: np.ndarray, final: bool = False) -> Placement:
        """Place results at (site, seq) in the parts known so far; at the end (`final`), results
        no PRR on their head/site closes go to the file's only open part where there is one.

        One pass per head/site over that site's results, against that site's PIRs and PRRs
        (small arrays), so millions of results cost a few binary searches each.
        """
        n = len(seq)
        part = np.full(n, -1, np.int64)
        closed_at = np.full(n, np.inf)
        in_pir = np.zeros(n, bool)
        sites = list(self.prr_by_site)
        for key in sites:
            rows = np.flatnonzero(site == key)
            prr_seq, prr_index = self.prr_by_site[key]
            pir_seq = self.pir_by_site.get(key, (seq[:0], None))[0]
            q = seq[rows]
            j = np.searchsorted(prr_seq, q, side="left")
            closed = j < len(prr_seq)
            at = np.clip(j, 0, len(prr_seq) - 1)
            part[rows] = np.where(closed, prr_index[at], -1)
            closed_at[rows] = np.where(closed, prr_seq[at].astype(np.float64), np.inf)
            prev_prr = np.where(j > 0, prr_seq[np.clip(j - 1, 0, None)].astype(np.float64), -1.0)
            p = np.searchsorted(pir_seq, q, side="right") - 1
            last_pir = (
                np.where(p >= 0, pir_seq[np.clip(p, 0, None)].astype(np.float64), -1.0)
                if len(pir_seq)
                else np.full(len(q), -1.0)
            )
            in_pir[rows] = last_pir > prev_prr
        fallback = np.zeros(n, bool)
        if final and (part < 0).any():  # rare: only files whose records disagree on head/site numbers
            unplaced = part < 0
            fallback[unplaced] = self._only_open_part(seq[unplaced], part, closed_at, unplaced)
            in_pir |= fallback
        return Placement(part=part, closed_at=closed_at, in_pir=in_pir, by_fallback=fallback)

    def _only_open_part(
        self, seq: np.ndarray, part: np.ndarray, closed_at: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """Place records in the part closed by the next PRR, where exactly one part is open in the
        whole file; True where placed."""
        _, n_prr, placed = self._one_open(seq)
        placed &= n_prr < len(self.all_prr)
        where = np.flatnonzero(rows)[placed]
        part[where] = n_prr[placed]
        closed_at[where] = self.all_prr[n_prr[placed]].astype(np.float64)
        return placed

    def _one_open(self, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """PIRs and PRRs before each `seq`, and whether exactly one part is open there."""
        n_pir = np.searchsorted(self.all_pir, seq, side="left")
        n_prr = np.searchsorted(self.all_prr, seq, side="left")
        last_pir = self.all_pir[np.clip(n_pir - 1, 0, None)] if len(self.all_pir) else np.zeros_like(seq)
        last_prr = self.all_prr[np.clip(n_prr - 1, 0, None)] if len(self.all_prr) else np.zeros_like(seq)
        return n_pir, n_prr, (n_pir - n_prr == 1) & ((n_prr == 0) | (last_pir > last_prr))

    def opening(self) -> tuple[np.ndarray, np.ndarray]:
        """For every PRR (all have arrived): the index of its part's PIR (-1: a part without PIR),
        and whether that PIR was found on another head/site (the file's only open part)."""
        pir = np.full(len(self.all_prr), -1, np.int64)
        for key, (prr_seq, prr_index) in self.prr_by_site.items():
            pir_seq, pir_index = self.pir_by_site.get(key, (prr_seq[:0], prr_index[:0]))
            if not len(pir_seq):
                continue
            p = np.searchsorted(pir_seq, prr_seq, side="left") - 1
            prev_prr = np.concatenate([[-1.0], prr_seq[:-1].astype(np.float64)])
            own = (p >= 0) & (pir_seq[np.clip(p, 0, None)].astype(np.float64) > prev_prr)
            pir[prr_index[own]] = pir_index[p[own]]
        mismatch = np.zeros(len(pir), bool)
        if (pir < 0).any() and len(self.all_pir):
            without = np.flatnonzero(pir < 0)
            n_pir, _, one = self._one_open(self.all_prr[without])
            claimed = set(pir[pir >= 0].tolist())
            one &= ~np.isin(n_pir - 1, list(claimed))
            pir[without[one]] = n_pir[one] - 1
            mismatch[without[one]] = True
        return pir, mismatch

    def notes(
        self,
        pir: np.ndarray,
        loose: np.ndarray,
        unclosed_sites: set[int],
        results_dropped: int,
        site_mismatches: int,
    ) -> dict:
        """How the file's parts were written: every count is of a documented rule. `pir` is each
        part's PIR (`opening`), `loose` per part the results read while no PIR was open,
        `unclosed_sites` the head/sites of results no PRR closed."""
        has_pir = pir >= 0
        loose = np.pad(loose, (0, max(len(pir) - len(loose), 0)))
        claimed = np.zeros(len(self.all_pir), bool)
        claimed[pir[has_pir]] = True
        lost_sites = set(unclosed_sites)
        for key, (pir_seq, pir_index) in self.pir_by_site.items():
            prr_seq = self.prr_by_site.get(key, (pir_seq[:0],))[0]
            after_last = pir_seq > (prr_seq[-1] if len(prr_seq) else -1)
            if (after_last & ~claimed[pir_index]).any():
                lost_sites.add(key)
        return {
            "parts_without_pir": int((~has_pir).sum()),
            "results_before_pir": int(loose[: len(pir)][has_pir].sum()),
            "results_in_parts_without_pir": int(loose[: len(pir)][~has_pir].sum()),
            "results_never_closed": results_dropped,
            "pirs_never_closed": int((~claimed).sum()),
            "parts_lost": len(lost_sites),
            "head_site_mismatches": site_mismatches,
        }


def _add_by_site(
    by_site: dict[int, tuple[np.ndarray, np.ndarray]], all_seq: np.ndarray, seq: np.ndarray, site: np.ndarray
) -> np.ndarray:
    """Append records (in file order) to their head/site's arrays; return all sequence numbers."""
    index = np.arange(len(all_seq), len(all_seq) + len(seq))
    for key in np.unique(site).tolist():
        rows = site == key
        old_seq, old_index = by_site.get(key, (seq[:0], index[:0]))
        by_site[key] = (np.concatenate([old_seq, seq[rows]]), np.concatenate([old_index, index[rows]]))
    return np.concatenate([all_seq, seq])
