"""Faults that damage the floor the way real ones do: the grammar (KIND:FAB:DATE[..DATE][:PARAM]),
each kind (file, content, clock, program, results, measurement and mechanism faults) and which
fab-days they hit.

See jobs/simulation/README.md for what each kind does and records in truth/faults.json.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.simulation.floor import FABS, Die, fab_index
from jobs.simulation.measure import Results, bin_results, final_bins, retested, take_results
from jobs.simulation.programs import HARD_OF_SOFT, PTR_FAMILIES, Program
from jobs.simulation.structures import without_pirs
from jobs.stdf.records import KNOWN_RECORD_TYPES

# The STDF time fields a `localtime` fault shifts, as faults.json lists them.
LOCALTIME_FIELDS = ("MIR.SETUP_T", "MIR.START_T", "WIR.START_T", "WRR.FINISH_T", "MRR.FINISH_T")


@dataclass(frozen=True)
class Fault:
    """One requested fault: KIND:FAB:DATE[..DATE][:PARAM]."""

    kind: str
    fab: str
    first: dt.date
    last: dt.date
    param: float | None
    text: str

    def covers(self, fab: str, day: dt.date) -> bool:
        return fab == self.fab and self.first <= day <= self.last


def truncate(content: bytes, offsets: np.ndarray, rng: np.random.Generator) -> tuple[bytes, dict[str, Any]]:
    """Cut the stream inside a PTR (so inside a part) in the middle of the file."""
    offset, size = _pick_record(content, offsets, rng, 0.4, 0.6, ptr_only=True)
    cut = offset + int(rng.integers(1, size))
    detail = dict(byte_offset=cut, record_offset=offset, record_type="PTR", original_size=len(content))
    return content[:cut], detail


def corrupt(content: bytes, offsets: np.ndarray, rng: np.random.Generator) -> tuple[bytes, dict[str, Any]]:
    """Overwrite 64 random bytes starting at a record header in the middle of the file."""
    offset, _ = _pick_record(content, offsets, rng, 0.45, 0.55, ptr_only=False)
    noise = rng.bytes(64)
    typ, sub = content[offset + 2], content[offset + 3]
    detail = dict(byte_offset=offset, length=64, record_type=KNOWN_RECORD_TYPES.get((typ, sub), "?"))
    return content[:offset] + noise + content[offset + 64 :], detail


def _pick_record(
    content: bytes, offsets: np.ndarray, rng: np.random.Generator, lo: float, hi: float, ptr_only: bool
) -> tuple[int, int]:
    """A random record whose header lies between fractions lo and hi of the stream: (offset, size)."""
    raw = np.frombuffer(content, np.uint8)
    inner = offsets[:-1]
    ok = (inner >= lo * len(content)) & (inner <= hi * len(content))
    if ptr_only:
        ok &= (raw[inner + 2] == 15) & (raw[inner + 3] == 10)
    i = int(rng.choice(np.flatnonzero(ok)))
    return int(offsets[i]), int(offsets[i + 1] - offsets[i])


def duplicate(path: Path, rng: np.random.Generator) -> dict[str, Any]:
    """Send a file twice: a byte-identical copy under a second name, ten minutes later."""
    copy = path.with_name(path.name.replace(".stdf", ".resent.stdf", 1))
    tmp = copy.with_name(f".{copy.name}.tmp")
    shutil.copyfile(path, tmp)
    mtime = path.stat().st_mtime + 600
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, copy)
    return dict(copy=copy, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


# Results faults: they change what one wafer's file says its dies measured, before binning. The
# dies, which of them go on to final test, the final-test files, the truth and the oracle are the
# fault-free run's: the floor's data is damaged, not its silicon (`damage_wafer`).
MISSING_TESTS = 3  # missing: parametric tests dropped from the program, by default
OUTLIER_DIES = 20  # outlier: dies reading an impossible value, by default
OUTLIER_FACTOR = 1e9  # outlier: the value read is this times the test's nominal value
DRIFT_FAMILY = "VTH_N_PM"  # drift: the family of tests that reads shifted values
DRIFT_SIGMAS = 1.5  # drift: the shift, by default, in the family's sigmas
SHIFT_STRENGTH = 1.0  # shift: how far final-test failure moves to the shifted mechanism, by default


@dataclass
class Damage:
    """One wafer's results while results faults change them: both passes' values and flags over
    the whole program (the model's units), which tests the program keeps, and the retest draw."""

    program: Program  # the model's program
    written: Program  # the program the file is written with (the dialect's, or the model's)
    x: np.ndarray  # the dies (first pass, probing order)
    y: np.ndarray
    value: list[np.ndarray]  # [first pass, retests]: (parts, tests), copies
    failed: list[np.ndarray]
    num_fail: list[np.ndarray]
    other: np.ndarray  # first pass: dies retested if they fail (continuity failures always are)
    keep: np.ndarray  # bool over the tests: still in the program

    def results(self, k: int) -> Results:
        """Pass k (0: first, 1: retests) binned by the tests the program keeps: a die runs the
        kept tests in flow order and stops at its first failure."""
        keep = self.keep
        return bin_results(
            self.program.subset(keep), *(a[k][:, keep] for a in (self.value, self.failed, self.num_fail))
        )

    def test_detail(self, tests: np.ndarray) -> dict[str, Any]:
        """Tests as the file writes them: names, numbers."""
        return dict(
            tests=[self.written.names[j] for j in tests],
            test_nums=[int(self.written.number[j]) for j in tests],
        )


def family_tests(program: Program, stem: str) -> np.ndarray:
    """Indices of a PTR family's tests: {stem}{n} or {stem}_{pin}, with any _C{k} suffix."""
    pattern = re.compile(rf"{re.escape(stem)}(\d+|_[A-Z0-9]+)(_C\d+)?")
    return np.array([j for j, n in enumerate(program.names) if pattern.fullmatch(n)], dtype=int)


def drift_results(damage: Damage, rng: np.random.Generator, sigmas: float | None) -> dict[str, Any]:
    """`drift`: every die's DRIFT_FAMILY tests read `sigmas` of the family's sigma higher (of
    ln(value) for a lognormal family), as after a tester's calibration drift; flags follow the
    limits. Deterministic: the rng is unused."""
    sigmas = DRIFT_SIGMAS if sigmas is None else sigmas
    program, tests = damage.program, family_tests(damage.program, DRIFT_FAMILY)
    family = next(f for f in PTR_FAMILIES if f.stem == DRIFT_FAMILY)
    step = sigmas * family.sigma
    lo, hi = program.lo[tests], program.hi[tests]
    for value, failed in zip(damage.value, damage.failed, strict=True):
        drifted = value[:, tests] * np.exp(step) if family.log else value[:, tests] + step
        value[:, tests] = drifted
        failed[:, tests] = ~((value[:, tests] > lo) & (value[:, tests] < hi))
    factor = 1.0 if damage.written.factor is None else float(damage.written.factor[tests[0]])
    detail = dict(family=DRIFT_FAMILY, **damage.test_detail(tests), units=damage.written.units[tests[0]])
    if family.log:  # the values are multiplied by exp(shift_sigmas x sigma_log)
        return detail | dict(shift_sigmas=sigmas, sigma_log=family.sigma, factor=float(np.exp(step)))
    shift = float(f"{step * factor:.12g}")  # 0.018, not 0.018000000000000002
    return detail | dict(shift_sigmas=sigmas, sigma=family.sigma * factor, shift=shift)


def drop_tests(damage: Damage, rng: np.random.Generator, count: float | None) -> dict[str, Any]:
    """`missing`: `count` parametric tests, chosen at random, leave the program (at least one stays):
    no PTR and no TSR for them; the dies are binned by the remaining tests."""
    ptr = np.flatnonzero(~damage.program.is_ftr & damage.keep)
    count = min(MISSING_TESTS if count is None else int(count), len(ptr) - 1)
    drop = np.sort(rng.choice(ptr, count, replace=False))
    damage.keep[drop] = False
    return damage.test_detail(drop)


def outlier_results(damage: Damage, rng: np.random.Generator, count: float | None) -> dict[str, Any]:
    """`outlier`: `count` dies read OUTLIER_FACTOR x nominal on one parametric test with both limits
    finite, chosen at random, and fail it (they stop there and get its bin). The dies are first-pass
    passing dies that would not be retested on failing, so each reads it once."""
    program, count = damage.program, OUTLIER_DIES if count is None else int(count)
    finite = np.isfinite(program.lo) & np.isfinite(program.hi) & (program.nominal != 0)
    test = int(rng.choice(np.flatnonzero(~program.is_ftr & damage.keep & finite)))
    candidates = np.flatnonzero(damage.results(0).passed & ~damage.other)
    dies = np.sort(rng.choice(candidates, min(count, len(candidates)), replace=False))
    value = np.float32(program.nominal[test] * OUTLIER_FACTOR)
    assert not program.lo[test] < value < program.hi[test]
    damage.value[0][dies, test], damage.failed[0][dies, test] = value, True
    written = damage.written
    lo, hi = (
        float(written.written(np.array([v]), np.array([test]))[0])
        for v in (program.lo[test], program.hi[test])
    )
    soft = int(program.soft_bin[test])
    return dict(
        test=written.names[test],
        test_num=int(written.number[test]),
        units=written.units[test],
        lo_limit=lo,
        hi_limit=hi,
        value=float(written.written(np.array([value]), np.array([test]))[0]),
        dies=len(dies),
        xy=[[int(damage.x[d]), int(damage.y[d])] for d in dies],
        soft_bin=soft,
        hard_bin=int(HARD_OF_SOFT[soft]),
    )


RESULTS_ORDER = ("drift", "missing", "outlier")  # results faults on one wafer apply in this order


def damage_wafer(
    program: Program,
    written: Program,
    dies: Die,
    first: Results,
    second: Results,
    again: np.ndarray,
    other: np.ndarray,
    faults: Sequence[tuple[Fault, np.random.Generator]],
) -> tuple[Program, Results, Results, np.ndarray, list[tuple[Fault, dict[str, Any]]]]:
    """What a wafer's file says under results faults: the program it is written with, the first
    pass, the retests and the retested dies (of the fault-free `again`, those the damaged flow
    still retests), and each fault's faults.json detail. `rebinned_dies` counts the dies whose
    final bin in the file differs from the fault-free run's (all the file's results faults)."""
    damage = Damage(
        program,
        written,
        dies.x,
        dies.y,
        [first.value.copy(), second.value.copy()],
        [first.failed.copy(), second.failed.copy()],
        [first.num_fail, second.num_fail],
        other,
        np.ones(len(program), dtype=bool),
    )
    details = [
        (fault, FAULT_KINDS[fault.kind].apply(damage, rng, fault.param))
        for fault, rng in sorted(faults, key=lambda f: RESULTS_ORDER.index(f[0].kind))
    ]
    new_first, new_second = damage.results(0), damage.results(1)
    new_again = np.intersect1d(again, retested(new_first, other))
    new_second = take_results(new_second, np.isin(again, new_again))
    before, after = final_bins(first, second, again), final_bins(new_first, new_second, new_again)
    rebinned = int((before != after).sum())
    details = [(fault, detail | dict(rebinned_dies=rebinned)) for fault, detail in details]
    return written.subset(damage.keep), new_first, new_second, new_again, details


@dataclass(frozen=True)
class FaultKind:
    what: str
    # "day" (whole fab-day), "clock" (time fields), "program" (names and units the wafer-sort files
    # are written with), "structure" (how every wafer-sort file of the fab-day writes its parts),
    # "content" (bytes before compression), "file", "results" (what one wafer
    # file's dies measured), "measurement" (what every wafer-sort file of the fab-day measured),
    # "mechanism" (how final-test failure of the dies sorted that fab-day follows from wafer sort)
    target: str
    apply: Callable[..., Any] | None = None
    param: str | None = None  # what the optional :PARAM means, if the kind takes one
    check: Callable[[float], str | None] | None = None  # what is wrong with a PARAM, None if fine


def _whole(value: float) -> str | None:
    whole = np.isfinite(value) and value >= 1 and value == int(value)
    return None if whole else "must be a whole number of at least 1"


def _sigmas(value: float) -> str | None:
    return None if np.isfinite(value) and value != 0 else "must be a finite number of sigmas other than 0"


def _strength(value: float) -> str | None:
    return None if 0 < value <= 1 else "must be a strength above 0 and at most 1"


# Add a kind here: "content" faults get (content, record offsets, rng) and return (content, details);
# "file" faults get (path, rng) after the file is written; "results" and "measurement" faults get
# (Damage, rng, PARAM) in `sort_wafer` before binning and return details (`damage_wafer`).
FAULT_KINDS: dict[str, FaultKind] = {
    "offline": FaultKind(
        "the fab delivers nothing that day, no _READY; FT files due then land the next day it delivers", "day"
    ),
    "truncated": FaultKind(
        "one wafer file is cut inside a PTR in the middle of the file", "content", truncate
    ),
    "corrupted": FaultKind(
        "64 random bytes overwrite one wafer file from a record header mid-file", "content", corrupt
    ),
    "duplicated": FaultKind(
        "one wafer file arrives twice: a byte-identical copy *.resent.stdf.gz", "file", duplicate
    ),
    "localtime": FaultKind(
        "MIR/WIR/WRR/MRR times are the testers' local time, not UTC",
        "clock",
        param="hours (default: the fab's)",
    ),
    "dialect": FaultKind(
        "the fab's wafer-sort files use its own test-program dialect: IDD_ACT* in A (x0.001), VOH*/VOL*"
        " in mV and IIH*/IIL* in nA (x1000), IDD_ACT{n}/FMAX_RO{n}/VTH_N_PM{n} named"
        " IDD_ACTIVE_{n}/RO_FMAX_{n}/VTN_PM_{n}; same TEST_NUMs and dies, final test unchanged",
        "program",
    ),
    "no_pir": FaultKind(
        "the fab's testers write no PIR in its wafer-sort files: a part is its results and its PRR"
        " (jobs/simulation/structures.py); same dies, results and truth",
        "structure",
        without_pirs,
    ),
    "missing": FaultKind(
        "one wafer file's program lacks PARAM parametric tests: no PTR or TSR for them, dies binned by"
        " the remaining tests",
        "results",
        drop_tests,
        param=f"tests dropped (default {MISSING_TESTS})",
        check=_whole,
    ),
    "outlier": FaultKind(
        "PARAM dies of one wafer file read an impossible 1e9 x nominal (OUTLIER_FACTOR) on one"
        " parametric test with both limits, and fail it",
        "results",
        outlier_results,
        param=f"dies (default {OUTLIER_DIES})",
        check=_whole,
    ),
    "drift": FaultKind(
        f"every wafer-sort file of the fab-day reads the {DRIFT_FAMILY}* tests PARAM sigmas higher (a"
        " measurement drift: dies, final test and truth unchanged)",
        "measurement",
        drift_results,
        param=f"sigmas, may be negative (default {DRIFT_SIGMAS:g})",
        check=_sigmas,
    ),
    "shift": FaultKind(
        "a process shift: final-test failure of the dies sorted those days follows another mechanism"
        " (high RCONT_M*, fast FMAX_RO*, the reliability factor's sign flipped; more failures), while"
        " wafer sort measures as before (measure.py shifted_ft_terms; the truth and oracle follow it)",
        "mechanism",
        param=f"strength, above 0 and at most 1 (default {SHIFT_STRENGTH:g}: the shifted mechanism alone)",
        check=_strength,
    ),
}
FAULT_GRAMMAR = "KIND:FAB:DATE[..DATE][:PARAM], comma-separated; KIND one of " + ", ".join(FAULT_KINDS)


def parse_faults(text: str | None) -> list[Fault]:
    """Parse --faults, e.g. ``offline:fab2:2026-11-18,localtime:fab2:2026-11-01..2026-11-30:+8``."""
    faults = []
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        pieces = item.split(":")
        if len(pieces) not in (3, 4):
            raise ValueError(f"fault {item!r}: expected {FAULT_GRAMMAR}")
        kind, fab, days = pieces[:3]
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault {item!r}: unknown kind {kind!r} (known: {', '.join(FAULT_KINDS)})")
        if fab not in FABS:
            raise ValueError(f"fault {item!r}: unknown fab {fab!r} (known: {', '.join(FABS)})")
        first, _, last = days.partition("..")
        param = None
        if len(pieces) == 4:
            spec = FAULT_KINDS[kind]
            if spec.param is None:
                raise ValueError(f"fault {item!r}: {kind} takes no parameter")
            param = _number(pieces[3], f"fault {item!r}: parameter")
            problem = spec.check(param) if spec.check else None
            if problem:
                raise ValueError(f"fault {item!r}: parameter {pieces[3]!r} {problem}; PARAM: {spec.param}")
        faults.append(Fault(kind, fab, parse_date(first), parse_date(last or first), param, item))
    return faults


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None


def parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"bad date {text!r}: expected YYYY-MM-DD") from None


def clock_shift(faults: Sequence[Fault], fab: str, day: dt.date) -> tuple[int, Fault | None]:
    """Seconds added to the time fields of files a fab tests that day (localtime fault)."""
    for fault in faults:
        if fault.kind == "localtime" and fault.covers(fab, day):
            hours = FABS[fab].utc_offset_hours if fault.param is None else fault.param
            return round(hours * 3600), fault
    return 0, None


def dialect_fault(faults: Sequence[Fault], fab: str, day: dt.date) -> Fault | None:
    """The dialect fault (if any) under which a fab writes its wafer-sort files that day."""
    return next((f for f in faults if f.kind == "dialect" and f.covers(fab, day)), None)


def process_shift(faults: Sequence[Fault], fab: str, day: dt.date) -> tuple[float, Fault | None]:
    """How far final-test failure of the dies a fab sorts that day has moved to the shifted
    mechanism (shift fault; 0: not at all), and the fault."""
    for fault in faults:
        if fault.kind == "shift" and fault.covers(fab, day):
            return SHIFT_STRENGTH if fault.param is None else fault.param, fault
    return 0.0, None


def measurement_faults(faults: Sequence[Fault], fab: str, day: dt.date) -> list[Fault]:
    """The faults (drift) that change what every wafer-sort file of a fab-day measured."""
    return [f for f in faults if FAULT_KINDS[f.kind].target == "measurement" and f.covers(fab, day)]


def is_offline(faults: Sequence[Fault], fab: str, day: dt.date) -> bool:
    return any(f.kind == "offline" and f.covers(fab, day) for f in faults)


def ft_landing_day(faults: Sequence[Fault], fab: str, day: dt.date) -> dt.date:
    """Final-test files of a day's lots land the next day the fab delivers."""
    landing = day + dt.timedelta(days=1)
    while is_offline(faults, fab, landing):
        landing += dt.timedelta(days=1)
    return landing


def fault_rng(seed: int, fault: Fault, fab: str, day: dt.date) -> np.random.Generator:
    """Faults draw from their own generator, so a faulty run's data equals the clean run's."""
    return np.random.default_rng([seed, zlib.crc32(fault.text.encode()), fab_index(fab), day.toordinal()])
