"""The simulated test floor: wafer-sort and final-test STDF for a few fabs, plus the ground truth.

    python -m jobs.simulation.simulate --root data --start 2026-11-16 --days 7            # demo floor, 3 fabs
    python -m jobs.simulation.simulate --root /tmp/b --start 2026-11-16 --days 1 --fabs fab1 \\
        --scale bench --lots 1 --wafers 1                                       # one ~100 MB file

Model of the floor
------------------
Each fab (`FABS`) has a few wafer-sort testers with their own node name, tester type, probe
card (2 or 4 sites) and byte order, and one final-test (FT) tester. Every day each fab sorts
`lots` lots of `wafers` wafers; wafers go round the testers, each tester spreading its wafers
over the day. One STDF file per wafer lands in ``landing/{fab}/{date}/{lot}_{wafer}.stdf.gz``
(mtime = end of test), and ``_READY`` is written last, once the day's files are all there.

A wafer is a round map of ~1500 dies probed touchdown by touchdown (serpentine; all sites'
PIRs, then their interleaved results test by test, then their PRRs). Every die carries five
hidden process factors (`LATENTS`): threshold voltage, gate length (speed), leakage, contact
resistance, and a reliability factor no wafer-sort test sees. Each factor is the sum of a fab
offset, a slow day-to-day drift, a lot and a wafer effect, a spatial pattern (radial bowl, edge
ring, tilt, sometimes a centre hot spot) and die noise. Each parametric test (PTR) measures a
fixed mix of the factors plus noise; functional tests (FTR) fail on defects or extreme dies.
Defects cluster (Gaussian blobs plus the edge ring) and break continuity, leakage or
function. Tests run in flow order and stop at the first failure, whose category picks the soft
and hard bin. Dies failing continuity (often a probe contact glitch) and a few other failures
are retested at the end of the wafer (PRR PART_FLG bit 1: supersedes the same X/Y).

Dies that pass wafer sort are packaged and get final test the next day: ``FT_{lot}.stdf.gz``
lands in ``landing/{fab}/{date+1}/``, without WIR/WRR and with no wafer coordinates; each
PRR's PART_TXT names the die (`ft_part_txt`, parsed by `parse_ft_part_txt`). The chance to
fail FT (`ft_fail_probability`) depends nonlinearly on a few wafer-sort results, on the die's
neighbourhood (failing neighbours, defect density, edge distance) and on the hidden factor,
so even a perfect model has an AUC below 1: `truth/oracle.json` gives that oracle AUC.

Ground truth never goes into STDF: ``truth/{fab}/{date}.parquet`` (one row per wafer-sort-passing
die of that day's wafers, with its FT outcome), ``truth/oracle.json``, ``truth/faults.json``
and ``truth/README.md``.

Everything is seeded per (seed, fab, day, lot, wafer): the same arguments give byte-identical
files, and a day's data does not depend on which other days or fabs are simulated (so a later
run can add days to the same root; oracle.json and faults.json are merged).

Faults (`--faults`) damage the floor the way real ones do: KIND:FAB:DATE[..DATE][:PARAM],
comma-separated, KIND one of `FAULT_KINDS` (offline, truncated, corrupted, duplicated,
localtime, dialect, no_pir, missing, outlier, drift). Each applied fault is recorded in truth/faults.json
with the file and byte offsets, or whatever else says exactly what it damaged. Faults draw
their random choices from their own generator, seeded per (seed, fault, fab, day), so a faulty
run's other data is the clean run's.

``dialect:FAB:DATE[..DATE]`` (no PARAM) writes that fab's wafer-sort files of those days in its
own test-program dialect, as fabs running their own flavour of a program do: the same tests and
TEST_NUMs, but some families in other units, their RESULT, LO_LIMIT, HI_LIMIT and TSR statistics
scaled to match (RES_SCAL stays 0), and some tests named differently (`DIALECT_UNITS`,
`DIALECT_RENAMES`; `dialect_of(name, units)` gives one test's dialect name, units and factor):

    IDD_ACT*      mA -> A    x 0.001      IDD_ACT{n}  -> IDD_ACTIVE_{n}
    VOH_*, VOL_*  V  -> mV   x 1000       FMAX_RO{n}  -> RO_FMAX_{n}
    IIH_*, IIL_*  uA -> nA   x 1000       VTH_N_PM{n} -> VTN_PM_{n}     (a _C{k} suffix is kept)

The dies, their results, bins and final test, and so the truth and oracle, are those of the
run without the fault; only the representation changes. faults.json gets one entry per fab-day
with the unit rules applied (`units`: pattern -> [from, to, factor]), the renamed tests
(`renames`: standard name -> dialect name) and the files.

Three faults damage what wafer-sort files say was measured (`damage_wafer`, in `sort_wafer`
before binning), as test floors do. They change the file's results, flags and bins only: the
dies, which of them go on to final test (the fault-free run's passing dies), the final-test
files, the truth parquet, p_fail_true and the oracle are the fault-free run's, and so are the
wafer's start and end times. The data is damaged, not the silicon, so the truth stays the
reference a monitor is checked against. The retested dies are those of the fault-free run that
the damaged flow still retests, with the same retest measurements. Each entry has
`rebinned_dies`: how many dies' final bin in the file differs from the fault-free run's (all
results faults of the file together).

``missing:FAB:DATE[..DATE][:N]``: on one wafer file per fab-day (chosen like the file faults'),
N parametric tests (default `MISSING_TESTS` = 3, chosen at random; at least one test stays) are
commented out of the program: no PTR for them for any die and no TSR; the other tests keep
their TEST_NUMs, and the dies are binned by the remaining tests (a die that failed only a
dropped test passes; PRR NUM_TEST and TEST_T count the remaining tests). faults.json: `file`,
`tests` (names as written), `test_nums`.

``outlier:FAB:DATE[..DATE][:N]``: on one wafer file per fab-day, N dies (default `OUTLIER_DIES`
= 20) read a physically impossible value on one parametric test with both limits finite (chosen
at random): `OUTLIER_FACTOR` (1e9) times its nominal value, e.g. 4.2e8 V on a 0.42 V threshold
voltage or 1.4e10 mA of active current, in PTR RESULT (never NaN). They fail that test (TEST_FLG
0x80, PARM_FLG high or low), stop there as the flow does and get its soft and hard bin. The dies
are first-pass dies that passed and that the floor would not retest on failing, so each die
reads the value once (all such dies if the wafer has fewer than N). faults.json: `file`, `test`,
`test_num`, `units`, `lo_limit`, `hi_limit`, `value` (as written), `dies` (how many), `xy` ([X,
Y] of each), `soft_bin`, `hard_bin`.

``drift:FAB:DATE[..DATE][:SIGMAS]``: every wafer-sort file of the fab-day reads the
`DRIFT_FAMILY` tests (the VTH_N_PM* threshold voltages) SIGMAS (default `DRIFT_SIGMAS` = 1.5,
may be negative) times the family's sigma higher (0.012 V, about its spread on a wafer: 1.5
sigma is +18 mV), first passes and retests, as after a tester's calibration drift; PASS/FAIL
flags and bins follow the limits (a few more dies fail). A measurement drift, not a process one:
the dies' hidden factors, their final test and the truth are unchanged (a process drift would
move them together, and final test with them). faults.json: one entry per fab-day with `family`,
`tests`, `test_nums`, `units`, `shift_sigmas`, `sigma` and `shift` (in the units), `files` and
`rebinned_dies` per file.
"""

from __future__ import annotations

import argparse
import calendar
import datetime as dt
import fnmatch
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from jobs.simulation.structures import without_pirs
from jobs.stdf.records import KNOWN_RECORD_TYPES
from jobs.stdf.writer import (
    PackedRecords,
    StdfWriter,
    encode_record,
    interleave,
    pack_ftrs,
    pack_pirs,
    pack_ptrs,
    pack_records,
)

# =============================================================================================
# Settings a user might tune


@dataclass(frozen=True)
class Scale:
    """How much data one fab produces per day."""

    lots: int  # lots sorted per fab per day
    wafers: int  # wafers per lot (at most 25)
    wafer_radius: float  # in die pitches: 22.5 gives 1489 dies
    n_ptr: int  # parametric tests per die at wafer sort
    compresslevel: int  # gzip level of the landing files


PRESETS: dict[str, Scale] = {
    "demo": Scale(lots=1, wafers=7, wafer_radius=22.5, n_ptr=100, compresslevel=1),  # ~10K dies/fab/day
    "bench": Scale(lots=1, wafers=2, wafer_radius=22.5, n_ptr=11_000, compresslevel=1),  # ~100 MB/wafer
}


@dataclass(frozen=True)
class Tester:
    node: str  # MIR.NODE_NAM
    kind: str  # MIR.TSTR_TYP
    exec_typ: str  # MIR.EXEC_TYP
    exec_ver: str
    byte_order: str  # "<" little-endian, ">" big-endian
    sites: int  # parallel sites per touchdown


@dataclass(frozen=True)
class Fab:
    code: str  # in lot ids: F{code}
    facility: str
    utc_offset_hours: float  # the testers' local time zone (used by the localtime fault)
    offset: tuple[float, ...]  # shift of each latent factor, in sigmas
    testers: tuple[Tester, ...]
    ft_tester: Tester


FABS: dict[str, Fab] = {
    "fab1": Fab(
        "1",
        "HILLSBORO-F1",
        -8,
        (0.0, 0.0, 0.0, 0.0, 0.0),
        (
            Tester("F1-J750-01", "J750", "IG-XL", "3.60.12", "<", 4),
            Tester("F1-J750-02", "J750", "IG-XL", "3.60.12", "<", 4),
            Tester("F1-93K-01", "V93000", "SmarTest", "7.4.3", ">", 2),
        ),
        Tester("F1-FT-ETS88-01", "ETS-88", "ETS", "2023.1", "<", 4),
    ),
    "fab2": Fab(
        "2",
        "HSINCHU-F2",
        8,
        (0.25, -0.1, 0.2, 0.0, 0.1),
        (
            Tester("F2-UFLEX-01", "UltraFLEX", "IG-XL", "10.10.5", "<", 4),
            Tester("F2-T2K-01", "T2000", "FutureSuite", "5.2", ">", 2),
            Tester("F2-T2K-02", "T2000", "FutureSuite", "5.2", ">", 2),
        ),
        Tester("F2-FT-93K-01", "V93000", "SmarTest", "8.2.1", ">", 4),
    ),
    "fab3": Fab(
        "3",
        "DRESDEN-F3",
        1,
        (-0.15, 0.2, 0.0, 0.3, -0.1),
        (
            Tester("F3-93K-01", "V93000", "SmarTest", "8.2.1", ">", 4),
            Tester("F3-93K-02", "V93000", "SmarTest", "8.2.1", ">", 2),
            Tester("F3-J750-01", "J750", "IG-XL", "3.60.12", "<", 4),
        ),
        Tester("F3-FT-J750-01", "J750", "IG-XL", "3.60.12", "<", 4),
    ),
}

PRODUCT = "PMX7"  # MIR.PART_TYP; lot ids are F{fab code}A{yy}{day of year}{lot letter}{nn}
LATENTS = ("vt", "leff", "leak", "rc", "rel")  # hidden per-die process factors, in sigmas


@dataclass(frozen=True)
class Process:
    """The process model: how the hidden factors vary over lots, wafers and the wafer map."""

    lot_sigma: tuple[float, ...] = (0.35, 0.35, 0.3, 0.25, 0.3)
    wafer_sigma: float = 0.15
    bowl: tuple[float, ...] = (0.4, 0.3, 0.3, 0.3, 0.2)  # times (r/R)^2
    edge_ring: tuple[float, ...] = (0.8, 0.6, 2.2, 1.6, 1.0)  # times exp(-edge distance / edge_decay)
    edge_decay: float = 1.3  # dies
    hot_spot: tuple[float, ...] = (0.0, -1.2, 3.2, 0.0, 0.8)  # centre hot spot, on some wafers
    hot_spot_chance: float = 0.35
    tilt_sigma: float = 0.3
    drift_amplitude: tuple[float, ...] = (0.3, 0.2, 0.15, 0.1, 0.15)  # slow sinusoidal drift
    drift_period_days: float = 41.0
    defect_base: float = 0.02  # random defects per die
    defect_edge: float = 0.22
    defect_clusters: float = 2.0  # clusters per wafer (Poisson mean)
    contact_glitch: float = 0.006  # first-pass probe contact failures (gone on retest)
    retest_other_fails: float = 0.15  # share of non-continuity failures that are retested too
    ft_base_logit: float = -5.0  # sets the final-test failure rate (~6%)


PROCESS = Process()
LOCALTIME_FIELDS = ("MIR.SETUP_T", "MIR.START_T", "WIR.START_T", "WRR.FINISH_T", "MRR.FINISH_T")

# =============================================================================================
# The test program

PINS = (
    *("VDD", "VDDIO", "AVDD", "CLK", "RSTN", "SDA", "SCL", "MOSI", "MISO", "SCK", "CSN", "ADC0"),
    *("TDI", "TDO", "TMS", "TCK"),
    *(f"GPIO{i}" for i in range(8)),
)


@dataclass(frozen=True)
class Family:
    """A family of parametric tests, e.g. VOH on every pin."""

    stem: str
    category: str  # CONT, LEAK, IDD, DC, AC: picks the bin when the test fails
    units: str
    nominal: float
    sigma: float  # for log tests: sigma of ln(value)
    lo: float | None  # test limits, None = no limit
    hi: float | None
    loading: tuple[float, ...]  # on vt, leff, leak, rc (and rel: only the reliability screen sees it)
    share: float  # of the program's parametric tests
    log: bool = False  # lognormal (leakage currents)
    per_pin: bool = True
    time_ms: float = 2.0


PTR_FAMILIES = (
    Family("CONT", "CONT", "V", -0.62, 0.018, -0.85, -0.40, (0.25, 0, 0, 0.4), 0.12),
    Family("IIH", "LEAK", "uA", 0.012, 0.55, -1.0, 0.6, (0, -0.25, 0.55, 0), 0.10, log=True),
    Family("IIL", "LEAK", "uA", -0.012, 0.55, -0.6, 1.0, (0, -0.25, 0.55, 0), 0.10, log=True),
    Family("IDDQ_V", "IDD", "uA", 3.0, 0.3, None, 15.0, (-0.3, -0.35, 0.7, 0), 0.05, log=True, per_pin=False),
    Family("IDD_ACT", "IDD", "mA", 14.0, 0.6, 10.0, 18.5, (-0.4, -0.6, 0.1, 0), 0.03, per_pin=False),
    Family("VOH", "DC", "V", 3.05, 0.025, 2.93, None, (-0.2, 0, 0, -0.6), 0.10),
    Family("VOL", "DC", "V", 0.18, 0.015, None, 0.27, (0.2, 0, 0, 0.6), 0.10),
    Family("VREF_BG", "DC", "V", 1.2, 0.006, 1.176, 1.224, (0.5, 0, 0, 0), 0.03, per_pin=False),
    Family("VTH_N_PM", "DC", "V", 0.42, 0.012, 0.37, 0.47, (0.9, 0.2, 0, 0), 0.03, per_pin=False),
    Family("IREF", "DC", "uA", 10.0, 0.15, 9.3, 10.7, (-0.4, 0, 0, 0.3), 0.03, per_pin=False),
    Family("RCONT_M", "DC", "ohm", 2.2, 0.08, None, 2.75, (0, 0, 0, 0.9), 0.03, per_pin=False),
    Family("FMAX_RO", "AC", "MHz", 920.0, 12.0, 868.0, None, (-0.45, -0.8, 0, 0), 0.08, per_pin=False),
    Family("TPD", "AC", "ns", 2.1, 0.03, None, 2.24, (0.35, 0.8, 0, 0.1), 0.08),
    Family("TSU", "AC", "ns", 0.85, 0.02, None, 0.96, (0.3, 0.7, 0, 0), 0.06),
    Family("PLL_JITTER", "AC", "ps", 18.0, 1.5, None, 27.0, (0.2, 0.3, 0.2, 0), 0.06, per_pin=False),
    # A reliability screen (IDDQ after a voltage stress, minus before): the one wafer-sort test that
    # sees the hidden reliability factor, as real stress screens partly see latent defects. Without
    # it the main cause of final-test failure would be invisible at wafer sort, and no yield model
    # could come near the oracle. Last in the list, so the other tests keep their loadings.
    Family(
        "IDDQ_DSTRESS", "IDD", "uA", 0.4, 0.35, None, 1.5, (0, 0, 0.15, 0, 0.9), 0.03, log=True, per_pin=False
    ),
)
# Functional tests: name, soft bin when failing, weight of defect-caused failures.
FTR_TESTS = (
    ("SCAN_CHAIN", 40, 3.0),
    ("SCAN_SA_1", 40, 2.0),
    ("SCAN_SA_2", 40, 2.0),
    ("SCAN_TDF_ATSPEED", 40, 1.0),
    ("MBIST_SRAM0", 41, 2.0),
    ("MBIST_SRAM1", 41, 2.0),
    ("MBIST_ROM", 41, 0.5),
    ("LBIST", 42, 1.0),
    ("JTAG_IDCODE", 42, 0.3),
    ("PLL_LOCK", 42, 0.5),
)
FLOW = ("CONT", "LEAK", "IDD", "FUNC", "DC", "AC")  # category order in the test flow
CATEGORY_SOFT_BIN = {"CONT": 50, "LEAK": 30, "IDD": 31, "DC": 20, "AC": 21}  # when a PTR fails
SOFT_BINS = {  # soft bin -> (name, hard bin)
    1: ("PASS", 1),
    20: ("DC_PARAMETRIC", 2),
    21: ("AC_TIMING", 2),
    30: ("LEAKAGE", 3),
    31: ("IDD", 3),
    40: ("SCAN", 4),
    41: ("MBIST", 4),
    42: ("FUNC_OTHER", 4),
    50: ("CONTINUITY", 5),
    60: ("FT_PARAMETRIC", 2),
    61: ("FT_IDD", 3),
    62: ("FT_FUNCTIONAL", 4),
}
HARD_BINS = {1: "PASS", 2: "PARAMETRIC", 3: "LEAKAGE_IDD", 4: "FUNCTIONAL", 5: "OPEN_SHORT"}


@dataclass(frozen=True)
class Program:
    """A test program: its tests in flow order, as arrays over the tests."""

    name: str
    number: np.ndarray  # TEST_NUM
    names: list[str]
    units: list[str]
    category: list[str]
    is_ftr: np.ndarray
    nominal: np.ndarray
    sigma: np.ndarray
    lo: np.ndarray  # -inf: no low limit
    hi: np.ndarray  # +inf: no high limit
    log: np.ndarray
    loading: np.ndarray  # (len(LATENTS), tests)
    noise: np.ndarray
    time_ms: np.ndarray
    soft_bin: np.ndarray  # when the test fails
    defect_weight: np.ndarray  # FTR: share of functional defects that fail this test
    # How the program writes its results: values, limits and statistics in STDF are the model's
    # (nominal, lo, hi: the standard units) times this factor per test; None = 1. A dialect's
    # program (`dialect_program`) has other names and units and a factor; the model is the same.
    factor: np.ndarray | None = None

    @functools.cached_property
    def c_format(self) -> np.ndarray:
        """PTR C_RESFMT per test: about four significant digits at the nominal value."""
        nominal = self.written(self.nominal)
        magnitude = np.floor(np.log10(np.where(np.isfinite(nominal) & (nominal != 0), abs(nominal), 1)))
        return np.char.add(np.char.add("%.", np.clip(3 - magnitude, 0, 6).astype(int).astype(str)), "f")

    def written(self, value: np.ndarray, test: np.ndarray | None = None) -> np.ndarray:
        """Model values (of every test, or of tests `test`, along the last axis) in the units the
        program writes: unchanged without a factor, else scaled and kept in the input's float type."""
        if self.factor is None:
            return value
        factor = self.factor if test is None else self.factor[test]
        return (value * factor).astype(np.result_type(value, np.float32))

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, keep: np.ndarray) -> Program:
        """The program with only the tests `keep` (bool over the tests), in flow order; TEST_NUMs
        and everything else of those tests unchanged (the `missing` fault)."""
        index = np.flatnonzero(keep)
        picked: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, list):
                picked[name] = [value[i] for i in index]
            elif isinstance(value, np.ndarray):
                picked[name] = value[:, index] if value.ndim == 2 else value[index]
        return replace(self, **picked)


@dataclass(frozen=True)
class TestDef:
    """One test of a program: parametric (from a Family) or functional (family None)."""

    name: str
    category: str
    family: Family | None = None
    loading: tuple[float, ...] = (0.0,) * len(LATENTS)
    soft_bin: int = 0  # when it fails
    defect_weight: float = 0.0  # functional: share of functional defects caught by this test


def _family_names(family: Family, count: int) -> list[str]:
    """VOH_CLK, VOH_SDA, ... then VOH_CLK_C1, ... for further conditions."""
    base = (
        [f"{family.stem}_{pin}" for pin in PINS]
        if family.per_pin
        else [f"{family.stem}{i}" for i in (1, 2, 3)]
    )
    return [base[i % len(base)] + (f"_C{i // len(base)}" if i >= len(base) else "") for i in range(count)]


@functools.cache
def wafer_sort_program(n_ptr: int) -> Program:
    """The wafer-sort program: `n_ptr` parametric tests in families, plus the functional tests."""
    rng = np.random.default_rng(20260101)  # the program is fixed, whatever the run's seed
    counts = np.maximum(1, np.floor([f.share * n_ptr for f in PTR_FAMILIES]).astype(int))
    counts[np.argmax(counts)] += n_ptr - counts.sum()
    tests = [
        TestDef(
            name,
            f.category,
            f,
            tuple(np.array(f.loading) * rng.uniform(0.8, 1.2, len(f.loading))),
            CATEGORY_SOFT_BIN[f.category],
        )
        for f, count in zip(PTR_FAMILIES, counts, strict=True)
        for name in _family_names(f, count)
    ]
    tests += [TestDef(name, "FUNC", soft_bin=sbin, defect_weight=w) for name, sbin, w in FTR_TESTS]
    return _program("WS1", sorted(tests, key=lambda t: FLOW.index(t.category)), 10_000)


def _program(name: str, tests: list[TestDef], number_step: int) -> Program:
    """Arrays over the tests; TEST_NUM is number_step * (category's place in FLOW + 1) + n."""
    families = [t.family for t in tests]
    is_ftr = np.array([f is None for f in families])
    loading = np.zeros((len(LATENTS), len(tests)))
    for j, t in enumerate(tests):
        loading[: len(t.loading), j] = t.loading
    seen: dict[str, int] = {}
    numbers = []
    for t in tests:
        seen[t.category] = seen.get(t.category, 0) + 1
        numbers.append(number_step * (FLOW.index(t.category) + 1) + seen[t.category])

    def of_family(attr: str, default: float) -> np.ndarray:
        values = [default if f is None or getattr(f, attr) is None else getattr(f, attr) for f in families]
        return np.array(values, dtype=float)

    return Program(
        name=name,
        number=np.array(numbers, dtype=np.uint32),
        names=[t.name for t in tests],
        units=["" if f is None else f.units for f in families],
        category=[t.category for t in tests],
        is_ftr=is_ftr,
        nominal=of_family("nominal", np.nan),
        sigma=of_family("sigma", np.nan),
        lo=of_family("lo", -np.inf),
        hi=of_family("hi", np.inf),
        log=of_family("log", 0).astype(bool),
        loading=loading,
        noise=np.sqrt(np.maximum(0.05, 1 - (loading**2).sum(axis=0))),
        time_ms=np.where(is_ftr, 40.0, of_family("time_ms", 0)),
        soft_bin=np.array([t.soft_bin for t in tests]),
        defect_weight=np.array([t.defect_weight for t in tests]),
    )


# The other test-program dialect (the `dialect` fault). A fab running its own flavour of the
# wafer-sort program reports some families in other units and names some tests differently; the
# tests, their TEST_NUMs, limits and results are the same. Rules are on the standard names:
#   units   IDD_ACT*  mA -> A   (x 0.001)     VOH_*, VOL_*  V -> mV  (x 1000)
#           IIH_*, IIL_*  uA -> nA  (x 1000)
#   names   IDD_ACT{n} -> IDD_ACTIVE_{n}      FMAX_RO{n} -> RO_FMAX_{n}      VTH_N_PM{n} -> VTN_PM_{n}
#           (a further condition's suffix _C{k} is kept: FMAX_RO2_C1 -> RO_FMAX_2_C1)
# Dialect value = standard value x factor, for RESULT, LO_LIMIT, HI_LIMIT and the TSR statistics
# (RES_SCAL stays 0); PASS/FAIL flags are the standard program's.
DIALECT_UNITS: tuple[tuple[str, str, str, float], ...] = (  # fnmatch pattern, from, to, factor
    ("IDD_ACT*", "mA", "A", 0.001),
    ("VOH_*", "V", "mV", 1000.0),
    ("VOL_*", "V", "mV", 1000.0),
    ("IIH_*", "uA", "nA", 1000.0),
    ("IIL_*", "uA", "nA", 1000.0),
)
DIALECT_RENAMES: tuple[tuple[str, str], ...] = (  # regex (whole name) -> template
    (r"IDD_ACT(\d+)(_C\d+)?", r"IDD_ACTIVE_\1\2"),
    (r"FMAX_RO(\d+)(_C\d+)?", r"RO_FMAX_\1\2"),
    (r"VTH_N_PM(\d+)(_C\d+)?", r"VTN_PM_\1\2"),
)


def _dialect_unit_rule(name: str, units: str) -> tuple[str, str, str, float] | None:
    for rule in DIALECT_UNITS:
        if units == rule[1] and fnmatch.fnmatchcase(name, rule[0]):
            return rule
    return None


def dialect_of(name: str, units: str) -> tuple[str, str, float]:
    """A standard wafer-sort test (TEST_TXT, UNITS) as the dialect writes it: (name, units, factor),
    dialect value = standard value x factor. A unit rule applies only to a test in the rule's
    standard units; a test the dialect leaves alone comes back unchanged with factor 1.0."""
    renamed = name
    for pattern, template in DIALECT_RENAMES:
        match = re.fullmatch(pattern, name)
        if match:
            renamed = match.expand(template)
            break
    rule = _dialect_unit_rule(name, units)
    return (renamed, units, 1.0) if rule is None else (renamed, rule[2], rule[3])


@functools.cache
def dialect_program(n_ptr: int) -> Program:
    """The wafer-sort program as a fab with its own dialect writes it: same tests, numbers and
    model (limits, nominal values), other names and units, and the factor its values get."""
    program = wafer_sort_program(n_ptr)
    names, units, factor = zip(*map(dialect_of, program.names, program.units), strict=True)
    return replace(program, names=list(names), units=list(units), factor=np.array(factor))


def dialect_mapping(n_ptr: int) -> dict[str, Any]:
    """What the dialect changes in a program: the unit rules that apply (pattern -> [from, to,
    factor]) and the renamed tests (standard name -> dialect name), as faults.json records them."""
    program = wafer_sort_program(n_ptr)
    applied, renames = set(), {}
    for name, unit in zip(program.names, program.units, strict=True):
        applied.add(_dialect_unit_rule(name, unit))
        renamed = dialect_of(name, unit)[0]
        if renamed != name:
            renames[name] = renamed
    units = {
        pattern: [a, b, factor]
        for pattern, a, b, factor in DIALECT_UNITS
        if (pattern, a, b, factor) in applied
    }
    return dict(units=units, renames=renames)


# Final test, at 85 C: a short program of its own, with FT bins.
FT_FAMILIES = (
    Family("FT_CONT", "CONT", "V", -0.60, 0.02, -0.85, -0.40, (0.2, 0, 0, 0.4), 2, per_pin=False),
    Family(
        "FT_IDDQ_HOT", "IDD", "uA", 9.0, 0.3, None, 60.0, (-0.3, -0.35, 0.7, 0), 1, log=True, per_pin=False
    ),
    Family("FT_IDD_RUN", "IDD", "mA", 31.0, 1.2, 24.0, 40.0, (-0.4, -0.6, 0.1, 0), 1, per_pin=False),
    Family("FT_VREF_HOT", "DC", "V", 1.198, 0.007, 1.17, 1.226, (0.5, 0, 0, 0), 1, per_pin=False),
    Family("FT_VOH", "DC", "V", 3.02, 0.03, 2.9, None, (-0.2, 0, 0, -0.6), 2, per_pin=False),
    Family("FT_FMAX_HOT", "AC", "MHz", 870.0, 14.0, 800.0, None, (-0.45, -0.8, 0, 0), 1, per_pin=False),
    Family("FT_TPD_CRIT", "AC", "ns", 2.2, 0.035, None, 2.4, (0.35, 0.8, 0, 0.1), 1, per_pin=False),
)  # share = number of tests here
FT_FTRS = ("FT_SCAN_ATSPEED", "FT_MBIST_HOT", "FT_FUNC_SYSTEM")
FT_SOFT_BIN = {"CONT": 62, "LEAK": 61, "IDD": 61, "DC": 60, "AC": 60, "FUNC": 62}


@functools.cache
def final_test_program() -> Program:
    tests = [
        TestDef(name, f.category, f, f.loading, FT_SOFT_BIN[f.category])
        for f in FT_FAMILIES
        for name in _family_names(f, int(f.share))
    ]
    tests += [TestDef(name, "FUNC", soft_bin=FT_SOFT_BIN["FUNC"], defect_weight=1.0) for name in FT_FTRS]
    return _program("FT1", sorted(tests, key=lambda t: FLOW.index(t.category)), 100)


# =============================================================================================
# Wafer geometry and probing


@functools.cache
def wafer_map(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """X/Y (int16) of the whole dies on a round wafer, X to the right and Y up, centre (0, 0)."""
    r = int(np.ceil(radius))
    y, x = np.mgrid[r : -r - 1 : -1, -r : r + 1]
    inside = np.hypot(np.abs(x) + 0.5, np.abs(y) + 0.5) <= radius
    return x[inside].astype(np.int16), y[inside].astype(np.int16)


def probe_order(x: np.ndarray, y: np.ndarray, sites: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Touchdowns of a 2-site (2x1) or 4-site (2x2) probe card, stepped in serpentine rows.

    Returns the dies in probing order (indices into x/y), each one's touchdown number and its
    site number (1-based).
    """
    width, height = 2, sites // 2
    col, row = x.astype(int) - x.min(), y.max() - y.astype(int)
    tx, ty = col // width, row // height
    site = 1 + col % width + width * (row % height)
    serpentine = np.where(ty % 2 == 0, tx, 10_000 - tx)
    key = ty * 100_000 + serpentine
    order = np.lexsort((site, key))
    _, touchdown = np.unique(key[order], return_inverse=True)
    return order, touchdown, site[order]


def neighbour_fail_share(x: np.ndarray, y: np.ndarray, failed: np.ndarray) -> np.ndarray:
    """Share of each die's (up to 8) neighbours on the wafer that failed wafer sort."""
    r = int(max(np.abs(x).max(), np.abs(y).max())) + 1
    present, fails = np.zeros((2 * r + 3,) * 2), np.zeros((2 * r + 3,) * 2)
    ix, iy = x.astype(int) + r + 1, y.astype(int) + r + 1
    present[iy, ix], fails[iy, ix] = 1.0, failed

    def around(grid: np.ndarray) -> np.ndarray:
        total = sum(np.roll(np.roll(grid, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        return (total - grid)[iy, ix]

    return around(fails) / np.maximum(around(present), 1)


# =============================================================================================
# Process model


def day_drift(day: dt.date, seed: int) -> np.ndarray:
    """Slow drift of the latent factors with the calendar day (same for all fabs)."""
    phases = np.random.default_rng([seed, 7]).uniform(0, 2 * np.pi, len(LATENTS))
    t = (day - dt.date(2026, 1, 1)).days
    return np.array(PROCESS.drift_amplitude) * np.sin(2 * np.pi * t / PROCESS.drift_period_days + phases)


def spatial_pattern(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """(dies, latents): bowl, edge ring, random tilt and, on some wafers, a centre hot spot."""
    r = np.hypot(x, y)
    edge = np.exp(-np.maximum(radius - r - 0.5, 0) / PROCESS.edge_decay)
    angle = rng.uniform(0, 2 * np.pi)
    tilt = (x * np.cos(angle) + y * np.sin(angle)) / radius
    bowl = (r / radius) ** 2
    pattern = np.outer(bowl - bowl.mean(), PROCESS.bowl) + np.outer(edge - edge.mean(), PROCESS.edge_ring)
    pattern += np.outer(tilt, rng.normal(0, PROCESS.tilt_sigma, len(LATENTS)))
    if rng.random() < PROCESS.hot_spot_chance:
        spot = np.exp(-(r**2) / (2 * rng.uniform(2.5, 5.0) ** 2))
        pattern += np.outer(spot, PROCESS.hot_spot) * rng.uniform(0.6, 1.2)
    return pattern


def defect_density(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Chance of a killer defect per die: a base rate, the edge ring and a few clusters."""
    r = np.hypot(x, y)
    density = PROCESS.defect_base + PROCESS.defect_edge * np.exp(-np.maximum(radius - r - 0.5, 0) / 0.9)
    for _ in range(rng.poisson(PROCESS.defect_clusters)):
        cr, ca = radius * np.sqrt(rng.uniform(0, 0.8)), rng.uniform(0, 2 * np.pi)
        d2 = (x - cr * np.cos(ca)) ** 2 + (y - cr * np.sin(ca)) ** 2
        density += rng.uniform(0.3, 0.8) * np.exp(-d2 / (2 * rng.uniform(1.2, 3.5) ** 2))
    return np.minimum(density, 0.9)


@dataclass
class Die:
    """The dies of one wafer (or one final-test lot), as arrays."""

    x: np.ndarray
    y: np.ndarray
    latent: np.ndarray  # (dies, latents)
    defect: np.ndarray  # "" none, "cont", "leak", "func"
    density: np.ndarray  # defect density at the die (for the FT model)


def make_dies(rng: np.random.Generator, radius: float, base: np.ndarray) -> Die:
    """Dies of one wafer: `base` (fab + drift + lot effect) plus wafer, spatial and die terms."""
    x, y = wafer_map(radius)
    wafer = rng.normal(0, PROCESS.wafer_sigma, len(LATENTS))
    latent = base + wafer + spatial_pattern(rng, x, y, radius) + rng.normal(size=(len(x), len(LATENTS)))
    density = defect_density(rng, x, y, radius)
    hit = rng.random(len(x)) < density
    kind = rng.choice(np.array(["cont", "leak", "func"]), size=len(x), p=[0.25, 0.35, 0.40])
    return Die(x, y, latent, np.where(hit, kind, ""), density)


# =============================================================================================
# Measuring and binning


@dataclass
class Results:
    """Test results of a set of part insertions (one row per PIR/PRR pair)."""

    value: np.ndarray  # (parts, tests) float32; NaN for functional tests
    failed: np.ndarray  # (parts, tests) bool
    num_fail: np.ndarray  # (parts, tests) int32: failing pins of failed functional tests
    num_test: np.ndarray  # tests executed (flow stops at the first failure)
    soft_bin: np.ndarray
    hard_bin: np.ndarray
    test_ms: np.ndarray  # PRR.TEST_T

    @property
    def passed(self) -> np.ndarray:
        return self.soft_bin == 1


def measure(rng: np.random.Generator, program: Program, dies: Die, glitch: np.ndarray | None) -> Results:
    """Run the flow on every die: parametric values, functional outcomes, stop at first fail."""
    value = parametric_values(rng, program, dies.latent)
    apply_defects(rng, program, dies, value, glitch)
    failed = ~((value > program.lo) & (value < program.hi))  # NaN (functional) counts as failed here
    failed[:, program.is_ftr] = functional_failures(rng, program, dies)
    num_fail = np.where(failed & program.is_ftr, rng.integers(1, 24, failed.shape), 0).astype(np.int32)
    return _bin(program, value, failed, num_fail)


def parametric_values(rng: np.random.Generator, program: Program, latent: np.ndarray) -> np.ndarray:
    """(parts, tests) float32: each parametric test measures its mix of factors plus noise."""
    ptr = ~program.is_ftr
    u = rng.normal(size=(len(latent), ptr.sum())) * program.noise[ptr]
    for k, loading in enumerate(program.loading[:, ptr]):  # not `latent @ loading`: BLAS threads cost more
        u += latent[:, k : k + 1] * loading
    nominal, sigma = program.nominal[ptr], program.sigma[ptr]
    value = np.full((len(latent), len(program)), np.nan, dtype=np.float32)
    value[:, ptr] = np.where(program.log[ptr], nominal * np.exp(sigma * u), nominal + sigma * u)
    return value


def apply_defects(
    rng: np.random.Generator, program: Program, dies: Die, value: np.ndarray, glitch: np.ndarray | None
) -> None:
    """Continuity and leakage defects (and probe-contact glitches) push a test far off."""
    category = np.array(program.category)
    cont, leak = np.flatnonzero(category == "CONT"), np.flatnonzero(np.isin(category, ["LEAK", "IDD"]))
    opens = (dies.defect == "cont") | (glitch if glitch is not None else False)
    rows = np.flatnonzero(opens)
    value[rows, rng.choice(cont, len(rows))] = rng.choice([-1.95, -0.03], len(rows)).astype(np.float32)
    rows = np.flatnonzero(dies.defect == "leak")
    cols = rng.choice(leak, len(rows))
    value[rows, cols] *= rng.uniform(40, 400, len(rows)).astype(np.float32)


def functional_failures(rng: np.random.Generator, program: Program, dies: Die) -> np.ndarray:
    """(dies, functional tests): defects fail one test; very slow or weak dies fail at-speed/MBIST."""
    ftr = np.flatnonzero(program.is_ftr)
    weight = program.defect_weight[ftr] / program.defect_weight[ftr].sum()
    failed = np.zeros((len(dies.x), len(ftr)), dtype=bool)
    rows = np.flatnonzero(dies.defect == "func")
    failed[rows, rng.choice(len(ftr), len(rows), p=weight)] = True
    vt, leff = dies.latent[:, 0], dies.latent[:, 1]
    slow = 0.8 * leff + 0.35 * vt + 0.5 * rng.normal(size=len(vt)) > 3.4
    weak = 0.7 * vt - 0.3 * leff + 0.6 * rng.normal(size=len(vt)) > 3.6
    names = [program.names[j] for j in ftr]
    failed[:, [i for i, n in enumerate(names) if "ATSPEED" in n]] |= slow[:, None]
    failed[:, [i for i, n in enumerate(names) if "MBIST" in n][:1]] |= weak[:, None]
    return failed


def _bin(program: Program, value: np.ndarray, failed: np.ndarray, num_fail: np.ndarray) -> Results:
    any_fail = failed.any(axis=1)
    first = np.where(any_fail, failed.argmax(axis=1), len(program) - 1)
    num_test = first + 1
    soft = np.where(any_fail, program.soft_bin[first], 1)
    hard = _HARD_OF_SOFT[soft]
    test_ms = 4.0 + np.concatenate([[0.0], np.cumsum(program.time_ms)])[num_test]
    return Results(value, failed, num_fail, num_test, soft, hard, np.round(test_ms).astype(np.uint32))


_HARD_OF_SOFT = np.zeros(max(SOFT_BINS) + 1, dtype=np.uint16)
for _soft, (_name, _hard) in SOFT_BINS.items():
    _HARD_OF_SOFT[_soft] = _hard


def retest_draw(rng: np.random.Generator, dies: int) -> np.ndarray:
    """Which dies would be retested if they failed other than on continuity (those always are)."""
    return rng.random(dies) < PROCESS.retest_other_fails


def retested(first: Results, other: np.ndarray) -> np.ndarray:
    """Dies tested again at the end of the wafer: continuity failures and the `other` failures."""
    return np.flatnonzero(~first.passed & ((first.soft_bin == 50) | other))


def take(dies: Die, index: np.ndarray) -> Die:
    return Die(dies.x[index], dies.y[index], dies.latent[index], dies.defect[index], dies.density[index])


def stack(parts: Sequence[Results]) -> Results:
    return Results(*(np.concatenate([getattr(r, f) for r in parts]) for f in Results.__dataclass_fields__))


def take_results(results: Results, index: np.ndarray) -> Results:
    return Results(*(getattr(results, f)[index] for f in Results.__dataclass_fields__))


def final_bins(first: Results, second: Results, again: np.ndarray) -> np.ndarray:
    """Each die's soft bin after its retest (if any)."""
    soft = first.soft_bin.copy()
    soft[again] = second.soft_bin
    return soft


def key_test_z(program: Program, value: np.ndarray, name: str) -> np.ndarray:
    """A test's results in sigmas from nominal (log scale for lognormal tests)."""
    j = program.names.index(name)
    v = value[:, j].astype(float)
    return (
        np.log(v / program.nominal[j]) / program.sigma[j]
        if program.log[j]
        else (v - program.nominal[j]) / program.sigma[j]
    )


def ft_fail_probability(
    program: Program, value: np.ndarray, dies: Die, neighbours: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """The true chance that a die which passed wafer sort fails final test, and the main causes.

    Nonlinear in three wafer-sort results (IDDQ leakage, ring-oscillator speed, threshold
    voltage), plus the neighbourhood (failing neighbours, local defect density, edge) and the
    hidden reliability factor. Returns p and the (parts, 3) weights of leakage, speed and
    functional/reliability causes, used to pick the test a failing part fails.
    """
    z_iddq = key_test_z(program, value, "IDDQ_V1")
    z_fmax = key_test_z(program, value, "FMAX_RO1")
    z_vt = key_test_z(program, value, "VTH_N_PM1")
    edge_distance = radius - np.hypot(dies.x, dies.y)
    leakage = 1.1 * np.logaddexp(0, 1.5 * (z_iddq - 1.2))
    speed = 0.7 * np.maximum(-z_fmax - 0.6, 0) ** 2 + 0.28 * z_vt**2
    other = (
        2.0 * neighbours + 6.4 * dies.density + 0.95 * np.exp(-edge_distance / 1.5) + 0.9 * dies.latent[:, 4]
    )
    logit = PROCESS.ft_base_logit + leakage + speed + other
    causes = np.stack([leakage, speed, np.maximum(other, 0)], axis=1) + 0.05
    return np.exp(-np.logaddexp(0, -logit)), causes / causes.sum(axis=1, keepdims=True)  # sigmoid


# =============================================================================================
# Record streams


class Stream:
    """An STDF byte stream being assembled, which knows where each record starts."""

    def __init__(self, byte_order: str):
        self.byte_order = byte_order
        self.chunks: list[bytes] = []
        self.sizes: list[np.ndarray] = []

    def add(self, name: str, **fields: Any) -> None:
        record = encode_record(name, self.byte_order, **fields)
        self.chunks.append(record)
        self.sizes.append(np.array([len(record)]))

    def add_block(self, block: PackedRecords) -> None:
        self.chunks.append(block.data)
        self.sizes.append(block.sizes)

    def content(self) -> bytes:
        return b"".join(self.chunks)

    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(np.concatenate(self.sizes))[:-1]])


@dataclass
class Parts:
    """Part insertions in file order (one PIR/PRR pair each)."""

    results: Results
    touchdown: np.ndarray
    site: np.ndarray  # 1-based
    x: np.ndarray  # int16; -32768 (missing) at final test
    y: np.ndarray
    part_flg: np.ndarray
    part_txt: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.site)


# The blocks `part_stream` interleaves.
PIR, PTR, FTR, PRR, FIRST_PTR, FIRST_FTR = range(6)


def part_stream(program: Program, parts: Parts, order: str) -> PackedRecords:
    """All parts' PIR, PTR/FTR and PRR records in probing order.

    Per touchdown: the PIRs of its sites, then test by test the results of every site still
    running (a part stops at its first failure), then the PRRs. The first PTR (or FTR) of each
    test in the file carries its name, units and limits; later ones are the short form.
    Each kind of record is packed at once with numpy; `interleave` puts them in file order.
    """
    res = parts.results
    grid = np.full((parts.touchdown.max() + 1, parts.site.max()), -1)
    grid[parts.touchdown, parts.site - 1] = np.arange(len(parts))
    present = grid >= 0
    part_at = np.where(present, grid, 0)
    running = (np.arange(len(program)) < res.num_test[part_at][..., None]) & present[..., None]
    cells = np.concatenate([present[..., None], running, present[..., None]], axis=2).transpose(0, 2, 1)
    td, col, site_index = np.nonzero(cells)  # row-major order is the file order
    part, site = part_at[td, site_index], (site_index + 1).astype(np.uint8)
    kind = np.concatenate([[PIR], np.where(program.is_ftr, FTR, PTR), [PRR]])[col]
    tests = np.flatnonzero((col > 0) & (col <= len(program)))
    _, first_seen = np.unique(col[tests], return_index=True)
    kind[tests[first_seen]] += FIRST_PTR - PTR  # PTR -> FIRST_PTR, FTR -> FIRST_FTR

    results = test_results(program, res, part[tests], col[tests] - 1, site[tests])
    test_kind = kind[tests]
    blocks = [
        PackedRecords.uniform(pack_pirs(1, site[kind == PIR], order), int((kind == PIR).sum())),
        short_ptrs(program, results, test_kind == PTR, order),
        short_ftrs(program, results, test_kind == FTR, order),
        prrs(parts, part[kind == PRR], order),
        first_ptrs(program, results, test_kind == FIRST_PTR, order),
        first_ftrs(program, results, test_kind == FIRST_FTR, order),
    ]
    sizes = np.empty(len(kind), dtype=np.int64)
    for k, block in enumerate(blocks):
        sizes[kind == k] = block.sizes
    return PackedRecords(interleave(kind, blocks), sizes)


def test_results(
    program: Program, res: Results, part: np.ndarray, test: np.ndarray, site: np.ndarray
) -> dict[str, np.ndarray]:
    """Field values of test records (one per executed test of a part), in file order. RESULT is in
    the units the program writes; the flags are the model's."""
    value, failed = res.value[part, test], res.failed[part, test]
    low, high = failed & (value < program.lo[test]), failed & (value > program.hi[test])
    return dict(
        test=test,
        site=site,
        value=program.written(value, test),
        test_flg=np.where(failed, 0x80, 0).astype(np.uint8),
        parm_flg=(low * 0x10 | high * 0x08).astype(np.uint8),
        # FTR: on failure the first failing cycle, vector address and pin count are valid.
        opt_flag=np.where(failed, 0xF4, 0xFF).astype(np.uint8),
        cycl_cnt=np.where(failed, 1000 + (part * 7919 + test * 104729) % 900_000, 0).astype(np.uint32),
        rel_vadr=np.where(failed, (part * 31 + test * 17) % 4096, 0).astype(np.uint32),
        num_fail=res.num_fail[part, test].astype(np.uint32),
    )


def short_ptrs(program: Program, r: dict[str, np.ndarray], sel: np.ndarray, order: str) -> PackedRecords:
    number = program.number[r["test"][sel]]
    data = pack_ptrs(
        number, 1, r["site"][sel], r["test_flg"][sel], r["parm_flg"][sel], r["value"][sel], order
    )
    return PackedRecords.uniform(data, len(number))


def short_ftrs(program: Program, r: dict[str, np.ndarray], sel: np.ndarray, order: str) -> PackedRecords:
    number = program.number[r["test"][sel]]
    data = pack_ftrs(
        number,
        1,
        r["site"][sel],
        r["test_flg"][sel],
        order,
        opt_flag=r["opt_flag"][sel],
        cycl_cnt=r["cycl_cnt"][sel],
        rel_vadr=r["rel_vadr"][sel],
        num_fail=r["num_fail"][sel],
    )
    return PackedRecords.uniform(data, len(number))


def first_ptrs(program: Program, r: dict[str, np.ndarray], sel: np.ndarray, order: str) -> PackedRecords:
    """The first PTR of each test: results plus name, limits, units and formats."""
    t = r["test"][sel]
    lo, hi = program.written(program.lo[t], t), program.written(program.hi[t], t)
    no_limit = np.where(np.isinf(lo), 0x40, 0) | np.where(np.isinf(hi), 0x80, 0)
    return pack_records(
        "PTR",
        order,
        n=len(t),
        TEST_NUM=program.number[t],
        HEAD_NUM=1,
        SITE_NUM=r["site"][sel],
        TEST_FLG=r["test_flg"][sel],
        PARM_FLG=r["parm_flg"][sel],
        RESULT=r["value"][sel],
        TEST_TXT=np.array(program.names)[t],
        ALARM_ID="",
        OPT_FLAG=0x0E | no_limit,  # scaling and limits valid, no spec limits
        RES_SCAL=0,
        LLM_SCAL=0,
        HLM_SCAL=0,
        LO_LIMIT=np.where(np.isinf(lo), 0.0, lo),
        HI_LIMIT=np.where(np.isinf(hi), 0.0, hi),
        UNITS=np.array(program.units)[t],
        C_RESFMT=program.c_format[t],
        C_LLMFMT=program.c_format[t],
        C_HLMFMT=program.c_format[t],
    )


def first_ftrs(program: Program, r: dict[str, np.ndarray], sel: np.ndarray, order: str) -> PackedRecords:
    """The first FTR of each test: the short fields plus the test name."""
    t = r["test"][sel]
    return pack_records(
        "FTR",
        order,
        n=len(t),
        TEST_NUM=program.number[t],
        HEAD_NUM=1,
        SITE_NUM=r["site"][sel],
        TEST_FLG=r["test_flg"][sel],
        OPT_FLAG=r["opt_flag"][sel],
        CYCL_CNT=r["cycl_cnt"][sel],
        REL_VADR=r["rel_vadr"][sel],
        NUM_FAIL=r["num_fail"][sel],
        RTN_ICNT=0,
        PGM_ICNT=0,
        TEST_TXT=np.array(program.names)[t],
    )


def prrs(parts: Parts, part: np.ndarray, order: str) -> PackedRecords:
    res = parts.results
    return pack_records(
        "PRR",
        order,
        HEAD_NUM=1,
        SITE_NUM=parts.site[part],
        PART_FLG=parts.part_flg[part] | np.where(res.passed[part], 0, 0x08),
        NUM_TEST=res.num_test[part],
        HARD_BIN=res.hard_bin[part],
        SOFT_BIN=res.soft_bin[part],
        X_COORD=parts.x[part],
        Y_COORD=parts.y[part],
        TEST_T=res.test_ms[part],
        PART_ID=(part + 1).astype(str),
        PART_TXT=None if parts.part_txt is None else parts.part_txt[part],
    )


def test_synopsis(program: Program, parts: Parts, order: str) -> PackedRecords:
    """One TSR per test, over all sites (HEAD_NUM 255), with result statistics."""
    res = parts.results
    results = program.written(res.value)  # as the PTRs give them
    executed = np.arange(len(program)) < res.num_test[:, None]
    measured = executed & ~program.is_ftr
    value = np.where(measured, results, 0).astype(np.float64)
    has_stats = measured.any(axis=0)
    return pack_records(
        "TSR",
        order,
        HEAD_NUM=255,
        SITE_NUM=255,
        TEST_TYP=np.where(program.is_ftr, "F", "P"),
        TEST_NUM=program.number,
        EXEC_CNT=executed.sum(axis=0),
        FAIL_CNT=(executed & res.failed).sum(axis=0),
        ALRM_CNT=0,
        TEST_NAM=program.names,
        SEQ_NAME=program.category,
        TEST_LBL="",
        OPT_FLAG=np.where(has_stats, 0xC8, 0xFB),  # 0xFB: min, max, sums and squares invalid
        TEST_TIM=program.time_ms / 1000,
        TEST_MIN=np.where(has_stats, np.where(measured, results, np.inf).min(axis=0, initial=np.inf), 0),
        TEST_MAX=np.where(has_stats, np.where(measured, results, -np.inf).max(axis=0, initial=-np.inf), 0),
        TST_SUMS=value.sum(axis=0),
        TST_SQRS=(value**2).sum(axis=0),
    )


def bin_summary(stream: Stream, parts: Parts) -> None:
    """HBRs, SBRs and PCRs per site and for all sites (HEAD_NUM 255)."""
    res = parts.results
    groups = [(1, s, parts.site == s) for s in range(1, parts.site.max() + 1)]
    groups.append((255, 255, np.ones(len(parts), dtype=bool)))
    for record, bins in (("HBR", res.hard_bin), ("SBR", res.soft_bin)):
        prefix = record[0] + "BIN"
        for head, site, mine in groups:
            for number, count in zip(*np.unique(bins[mine], return_counts=True), strict=True):
                name = HARD_BINS[int(number)] if record == "HBR" else SOFT_BINS[int(number)][0]
                stream.add(
                    record,
                    HEAD_NUM=head,
                    SITE_NUM=site,
                    **{
                        f"{prefix}_NUM": int(number),
                        f"{prefix}_CNT": int(count),
                        f"{prefix}_PF": "P" if number == 1 else "F",
                        f"{prefix}_NAM": name,
                    },
                )
    for head, site, mine in groups:
        retests = int((parts.part_flg[mine] & 0x02 > 0).sum())
        good = int(res.passed[mine].sum())
        stream.add(
            "PCR",
            HEAD_NUM=head,
            SITE_NUM=site,
            PART_CNT=int(mine.sum()),
            RTST_CNT=retests,
            ABRT_CNT=0,
            GOOD_CNT=good,
        )


def summary_records(stream: Stream, program: Program, parts: Parts) -> None:
    """After the last part: TSRs, then HBR/SBR/PCR."""
    stream.add_block(test_synopsis(program, parts, stream.byte_order))
    bin_summary(stream, parts)


# =============================================================================================
# Files of the floor


def lot_id(fab: str, day: dt.date, index: int) -> str:
    """F{fab code}A{yy}{day of year}{letter}{nn}, e.g. F1A26327A01: unique across fabs and days."""
    return (
        f"F{FABS[fab].code}A{day:%y}{day.timetuple().tm_yday:03d}{chr(65 + index // 99)}{index % 99 + 1:02d}"
    )


def ft_part_txt(lot: Any, wafer: Any, x: Any, y: Any) -> np.ndarray:
    """Final-test PRR.PART_TXT naming the die: ``lot=F1A26327A01;wafer=03;x=12;y=-7``."""
    parts = [
        "lot=",
        lot,
        ";wafer=",
        wafer,
        ";x=",
        np.asarray(x).astype(int),
        ";y=",
        np.asarray(y).astype(int),
    ]
    return functools.reduce(np.strings.add, (np.asarray(p).astype(str) for p in parts))


def parse_ft_part_txt(text: str) -> tuple[str, str, int, int]:
    """(lot_id, wafer_id, x, y) from a final-test PART_TXT; ValueError if it is not one."""
    try:
        fields = dict(item.split("=", 1) for item in text.split(";"))
        if set(fields) != {"lot", "wafer", "x", "y"}:
            raise ValueError
        return fields["lot"], fields["wafer"], int(fields["x"]), int(fields["y"])
    except ValueError:
        raise ValueError(f"not a final-test PART_TXT (lot=...;wafer=...;x=...;y=...): {text!r}") from None


def epoch(day: dt.date) -> int:
    return calendar.timegm(day.timetuple())


def header_records(
    stream: Stream, fab: Fab, tester: Tester, program: Program, lot: str, setup: int, start: int
) -> None:
    """MIR and SDR (FAR is the writer's)."""
    final = program.name.startswith("FT")
    stream.add(
        "MIR",
        SETUP_T=setup,
        START_T=start,
        STAT_NUM=int(tester.node[-2:]),
        MODE_COD="P",
        RTST_COD=" ",
        PROT_COD=" ",
        BURN_TIM=65535,
        CMOD_COD=" ",
        LOT_ID=lot,
        PART_TYP=PRODUCT,
        NODE_NAM=tester.node,
        TSTR_TYP=tester.kind,
        JOB_NAM=f"{PRODUCT}_{program.name}",
        JOB_REV="B3",
        SBLOT_ID="",
        OPER_NAM=f"OP{start % 37:02d}",
        EXEC_TYP=tester.exec_typ,
        EXEC_VER=tester.exec_ver,
        TEST_COD=program.name,
        TST_TEMP="85" if final else "25",
        USER_TXT="",
        AUX_FILE="",
        PKG_TYP="QFN48" if final else "",
        FAMLY_ID="PMX",
        DATE_COD="",
        FACIL_ID=fab.facility,
        FLOOR_ID="FT" if final else "SORT",
        PROC_ID="C40LP",
        OPER_FRQ="",
        SPEC_NAM=f"{PRODUCT}_DS",
        SPEC_VER="1.2",
        FLOW_ID=program.name,
    )
    stream.add(
        "SDR",
        HEAD_NUM=1,
        SITE_GRP=1,
        SITE_NUM=list(range(1, tester.sites + 1)),
        HAND_TYP="SRM-HT8" if final else "TEL-P12XL",
        HAND_ID=f"{tester.node}-H1",
        CARD_TYP="" if final else f"PC-{tester.sites}X",
        CARD_ID="" if final else f"PC{tester.sites}-{tester.node[-2:]}",
    )


@dataclass(frozen=True)
class WaferPlan:
    lot: str
    lot_index: int
    wafer: int  # 1..25
    tester: int  # index into the fab's testers
    slot_start: int  # the tester's time slot for this wafer (UTC epoch seconds)
    slot_length: int


def plan_day(seed: int, fab: str, day: dt.date, scale: Scale) -> list[WaferPlan]:
    """Lots and wafers of a fab-day. Wafers go round the testers; each tester splits the day
    into equal slots, one per wafer, so start times spread over the day's hours."""
    testers = len(FABS[fab].testers)
    first = int(np.random.default_rng([seed, _fab_index(fab), day.toordinal(), 2]).integers(testers))
    jobs = [(lot, wafer) for lot in range(scale.lots) for wafer in range(1, scale.wafers + 1)]
    queue: dict[int, list[int]] = {}
    for k in range(len(jobs)):
        queue.setdefault((first + k) % testers, []).append(k)
    plans: dict[int, WaferPlan] = {}
    for tester, mine in queue.items():
        length = 86_400 // len(mine)
        for i, k in enumerate(mine):
            lot, wafer = jobs[k]
            plans[k] = WaferPlan(lot_id(fab, day, lot), lot, wafer, tester, epoch(day) + i * length, length)
    return [plans[k] for k in range(len(jobs))]


def _fab_index(fab: str) -> int:
    return list(FABS).index(fab) + 1


def test_seconds(parts: Parts, index_s: float = 0.35, load_s: float = 90.0) -> float:
    """Time on the tester: per touchdown its slowest site plus the prober/handler step, plus loading."""
    slowest = np.zeros(parts.touchdown.max() + 1)
    np.maximum.at(slowest, parts.touchdown, parts.results.test_ms / 1000.0)
    return float(load_s + slowest.sum() + index_s * len(slowest))


@dataclass
class SortedWafer:
    content: bytes  # the whole STDF stream, FAR included
    offsets: np.ndarray  # of every record
    end: int  # end of test (UTC)
    passing: dict[str, np.ndarray]  # the dies that passed: x, y, latent, p_fail, causes
    damage: list[tuple[Fault, dict[str, Any]]]  # the results faults applied, with their details


def wafer_parts(
    first: Results,
    second: Results,
    again: np.ndarray,
    dies: Die,
    touchdown: np.ndarray,
    site: np.ndarray,
    sites: int,
) -> Parts:
    """A wafer's part insertions in file order: every die once, then the retests of dies `again`."""
    return Parts(
        stack([first, second]),
        np.concatenate([touchdown, touchdown.max() + 1 + np.arange(len(again)) // sites]),
        np.concatenate([site, 1 + np.arange(len(again)) % sites]),
        np.concatenate([dies.x, dies.x[again]]),
        np.concatenate([dies.y, dies.y[again]]),
        np.concatenate([np.zeros(len(dies.x)), np.full(len(again), 0x02)]).astype(np.uint8),
    )


def sort_wafer(
    seed: int,
    fab: str,
    day: dt.date,
    plan: WaferPlan,
    scale: Scale,
    base: np.ndarray,
    shift: int,
    dialect: bool = False,
    faults: Sequence[Fault] = (),
) -> SortedWafer:
    """Test one wafer: the STDF stream and what final test needs about its good dies. With
    `dialect` the stream is written in the fab's own test-program dialect (`dialect_program`);
    the dies, results and bins are the same. Results `faults` (missing, outlier, drift) change
    what the stream says (`damage_wafer`), not the dies, their final test or the truth."""
    rng = np.random.default_rng([seed, _fab_index(fab), day.toordinal(), plan.lot_index, plan.wafer, 0])
    tester, program = FABS[fab].testers[plan.tester], wafer_sort_program(scale.n_ptr)
    written = dialect_program(scale.n_ptr) if dialect else program
    dies = make_dies(rng, scale.wafer_radius, base)
    order, touchdown, site = probe_order(dies.x, dies.y, tester.sites)
    dies = take(dies, order)
    first = measure(rng, program, dies, glitch=rng.random(len(order)) < PROCESS.contact_glitch)
    other = retest_draw(rng, len(order))
    again = retested(first, other)
    second = measure(rng, program, take(dies, again), glitch=None)
    parts = wafer_parts(first, second, again, dies, touchdown, site, tester.sites)
    passed, value = first.passed.copy(), first.value.copy()
    passed[again], value[again] = second.passed, second.value
    p_fail, causes = ft_fail_probability(
        program, value, dies, neighbour_fail_share(dies.x, dies.y, ~passed), scale.wafer_radius
    )
    duration = min(test_seconds(parts), plan.slot_length - 60)
    start = plan.slot_start + int(rng.uniform(0, max(plan.slot_length - 60 - duration, 1)))
    end = start + int(duration)
    damage: list[tuple[Fault, dict[str, Any]]] = []
    if faults:  # the file says what the damaged flow measured; the wafer's times stay
        rngs = [_fault_rng(seed, f, fab, day) for f in faults]
        written, first, second, again, damage = damage_wafer(
            program, written, dies, first, second, again, other, list(zip(faults, rngs, strict=True))
        )
        parts = wafer_parts(first, second, again, dies, touchdown, site, tester.sites)

    stream = Stream(tester.byte_order)
    stream.add("FAR", CPU_TYPE=1 if tester.byte_order == ">" else 2, STDF_VER=4)
    header_records(stream, FABS[fab], tester, written, plan.lot, start - 600 + shift, start + shift)
    stream.add(
        "WCR", WAFR_SIZ=300.0, DIE_HT=6.2, DIE_WID=6.2, WF_UNITS=3, WF_FLAT="D", CENTER_X=0, CENTER_Y=0
    )
    stream.add("WIR", HEAD_NUM=1, SITE_GRP=255, START_T=start + shift, WAFER_ID=f"{plan.wafer:02d}")
    stream.add_block(part_stream(written, parts, tester.byte_order))
    stream.add(
        "WRR",
        HEAD_NUM=1,
        SITE_GRP=255,
        FINISH_T=end + shift,
        PART_CNT=len(parts),
        RTST_CNT=len(again),
        ABRT_CNT=0,
        GOOD_CNT=int(parts.results.passed.sum()),
        FUNC_CNT=None,
        WAFER_ID=f"{plan.wafer:02d}",
    )
    summary_records(stream, written, parts)
    stream.add("MRR", FINISH_T=end + shift, DISP_COD=" ", USR_DESC="", EXC_DESC="")
    good = np.flatnonzero(passed)
    passing = dict(
        x=dies.x[good], y=dies.y[good], latent=dies.latent[good], p_fail=p_fail[good], causes=causes[good]
    )
    return SortedWafer(stream.content(), stream.offsets(), end, passing, damage)


def final_test_results(
    rng: np.random.Generator, program: Program, latent: np.ndarray, failing: np.ndarray, causes: np.ndarray
) -> Results:
    """Final-test results: good parts inside every limit; a failing part fails one test, by cause."""
    value = parametric_values(rng, program, latent + np.array([0.2, 0.3, 0.5, 0.0, 0.0]))  # 85 C
    margin = 1e-3 * np.abs(program.nominal)
    value = np.clip(value, program.lo + margin, program.hi - margin).astype(np.float32)
    ftr = np.flatnonzero(program.is_ftr)
    cause = (rng.random(len(latent))[:, None] > np.cumsum(causes, axis=1)).sum(axis=1)
    target = np.select(
        [cause == 0, cause == 1],
        [program.names.index("FT_IDDQ_HOT1"), program.names.index("FT_FMAX_HOT1")],
        rng.choice(ftr, len(latent)),
    )
    rows = np.flatnonzero(failing)
    cols = target[rows]
    spread = np.abs(program.nominal[cols]) * rng.uniform(0.02, 0.3, len(rows))
    beyond = np.where(np.isfinite(program.hi[cols]), program.hi[cols] + spread, program.lo[cols] - spread)
    value[rows, cols] = np.where(program.is_ftr[cols], np.nan, beyond)
    failed = ~((value > program.lo) & (value < program.hi))
    failed[:, ftr] = False
    failed[rows, cols] = True
    num_fail = np.where(failed & program.is_ftr, rng.integers(1, 12, failed.shape), 0).astype(np.int32)
    return _bin(program, value, failed, num_fail)


def final_test_lot(
    seed: int,
    fab: str,
    day: dt.date,
    lot_index: int,
    lot: str,
    units: dict[str, np.ndarray],
    start: int,
    shift: int,
) -> tuple[Stream, int, np.ndarray]:
    """FT of one lot's good dies on a quad-site handler, in shuffled order. Returns the STDF
    stream, the end of test and each unit's FT outcome (in `units` order)."""
    rng = np.random.default_rng([seed, _fab_index(fab), day.toordinal(), lot_index, 0, 1])
    tester, program = FABS[fab].ft_tester, final_test_program()
    failed = rng.random(len(units["x"])) < units["p_fail"]
    order = rng.permutation(len(failed))
    results = final_test_results(rng, program, units["latent"][order], failed[order], units["causes"][order])
    n = len(order)
    parts = Parts(
        results,
        np.arange(n) // tester.sites,
        1 + np.arange(n) % tester.sites,
        np.full(n, -32768, dtype=np.int16),
        np.full(n, -32768, dtype=np.int16),
        np.zeros(n, dtype=np.uint8),
        ft_part_txt(lot, units["wafer"][order], units["x"][order], units["y"][order]),
    )
    end = start + int(test_seconds(parts, index_s=0.45, load_s=300.0))
    stream = Stream(tester.byte_order)
    stream.add("FAR", CPU_TYPE=1 if tester.byte_order == ">" else 2, STDF_VER=4)
    header_records(stream, FABS[fab], tester, program, lot, start - 900 + shift, start + shift)
    stream.add_block(part_stream(program, parts, tester.byte_order))
    summary_records(stream, program, parts)
    stream.add("MRR", FINISH_T=end + shift, DISP_COD=" ", USR_DESC="", EXC_DESC="")
    return stream, end, failed


# =============================================================================================
# Faults


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
        return _bin(
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
        hard_bin=int(_HARD_OF_SOFT[soft]),
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
    # file's dies measured), "measurement" (what every wafer-sort file of the fab-day measured)
    target: str
    apply: Callable[..., Any] | None = None
    param: str | None = None  # what the optional :PARAM means, if the kind takes one
    check: Callable[[float], str | None] | None = None  # what is wrong with a PARAM, None if fine


def _whole(value: float) -> str | None:
    whole = np.isfinite(value) and value >= 1 and value == int(value)
    return None if whole else "must be a whole number of at least 1"


def _sigmas(value: float) -> str | None:
    return None if np.isfinite(value) and value != 0 else "must be a finite number of sigmas other than 0"


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


def _fault_rng(seed: int, fault: Fault, fab: str, day: dt.date) -> np.random.Generator:
    """Faults draw from their own generator, so a faulty run's data equals the clean run's."""
    return np.random.default_rng([seed, zlib.crc32(fault.text.encode()), _fab_index(fab), day.toordinal()])


# =============================================================================================
# A run: fab-days, landing files, truth


@dataclass(frozen=True)
class Run:
    root: Path
    days: tuple[dt.date, ...]
    fabs: tuple[str, ...] = tuple(FABS)
    scale: Scale = PRESETS["demo"]
    seed: int = 0
    faults: tuple[Fault, ...] = ()


def write_landing(path: Path, content: bytes, byte_order: str, level: int, mtime: int) -> None:
    """Write one landing file atomically (FAR from the writer) and date it to its upload time."""
    far = encode_record("FAR", byte_order, CPU_TYPE=1 if byte_order == ">" else 2, STDF_VER=4)
    if not content.startswith(far):
        raise ValueError(f"{path.name}: the stream must start with a FAR for byte order {byte_order!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with StdfWriter(path, byte_order, compresslevel=level) as writer:
        writer.write_bytes(memoryview(content)[len(far) :])
    os.utime(path, (mtime, mtime))


def simulate_fab_day(run: Run, fab: str, day: dt.date) -> list[dict]:
    """Sort a fab's wafers of one day, final-test its good dies (landing the next day) and write
    the truth. Returns the faults applied, as faults.json entries. (_READY is the caller's.)"""
    (run.root / "landing" / fab / day.isoformat() / "_READY").unlink(missing_ok=True)  # if re-simulated
    if is_offline(run.faults, fab, day):
        offline = [f for f in run.faults if f.kind == "offline" and f.covers(fab, day)]
        return [_fault_entry(run.root, fab, day, f, None, detail="no files, no _READY") for f in offline]
    plans = plan_day(run.seed, fab, day, run.scale)
    targets = _fault_targets(run, fab, day, len(plans))
    entries, wafer_files, good = [], [], {}
    for k, plan in enumerate(plans):
        path, passing, found = land_wafer(run, fab, day, plan, targets.get(k, []))
        entries += found
        wafer_files.append(path)
        good.setdefault(plan.lot_index, []).append(passing)
    ft_files, truth = final_test_day(run, fab, day, good)
    write_truth(run.root / "truth" / fab / f"{day.isoformat()}.parquet", truth)
    return (
        _fab_day_entries(entries)
        + _localtime_entries(run, fab, day, wafer_files, ft_files)
        + _dialect_entries(run, fab, day, wafer_files)
    )


def land_wafer(
    run: Run, fab: str, day: dt.date, plan: WaferPlan, faults: list[Fault]
) -> tuple[Path, dict[str, Any], list[dict]]:
    """Sort one wafer and write its file (with any faults aimed at it). Returns the path, the
    wafer's good dies for final test, and the faults.json entries."""
    shift, _ = clock_shift(run.faults, fab, day)
    dialect = dialect_fault(run.faults, fab, day) is not None
    base = lot_base(run.seed, fab, day, plan.lot_index)
    damaging = [f for f in faults if FAULT_KINDS[f.kind].target == "results"]
    damaging += measurement_faults(run.faults, fab, day)
    wafer = sort_wafer(run.seed, fab, day, plan, run.scale, base, shift, dialect, damaging)
    path = run.root / "landing" / fab / day.isoformat() / f"{plan.lot}_{plan.wafer:02d}.stdf.gz"
    content, offsets, entries = wafer.content, wafer.offsets, []
    for fault in (f for f in run.faults if FAULT_KINDS[f.kind].target == "structure" and f.covers(fab, day)):
        content, offsets, detail = FAULT_KINDS[fault.kind].apply(content, offsets)  # every file of the day
        entries.append(_fault_entry(run.root, fab, day, fault, path, **detail))
    for fault, detail in wafer.damage:  # a measurement fault's entries are merged per fab-day
        entries.append(_fault_entry(run.root, fab, day, fault, path, **detail))
    for fault in faults:
        if FAULT_KINDS[fault.kind].target == "content":
            content, detail = FAULT_KINDS[fault.kind].apply(
                content, offsets, _fault_rng(run.seed, fault, fab, day)
            )
            entries.append(_fault_entry(run.root, fab, day, fault, path, **detail))
    write_landing(
        path, content, FABS[fab].testers[plan.tester].byte_order, run.scale.compresslevel, wafer.end
    )
    for fault in faults:
        if FAULT_KINDS[fault.kind].target == "file":
            detail = FAULT_KINDS[fault.kind].apply(path, _fault_rng(run.seed, fault, fab, day))
            entries.append(_fault_entry(run.root, fab, day, fault, path, **detail))
    return path, dict(wafer.passing, wafer=f"{plan.wafer:02d}", lot=plan.lot), entries


def _fab_day_entries(entries: list[dict]) -> list[dict]:
    """The entries of the wafers of a fab-day, with those of each measurement fault (one per file)
    merged into one: `file` null, `files` the files, and per-file details as lists in file order."""
    merged: dict[str, dict] = {}
    kept = []
    for entry in entries:
        if FAULT_KINDS[entry["kind"]].target != "measurement":
            kept.append(entry)
        elif entry["spec"] not in merged:
            merged[entry["spec"]] = entry | dict(
                file=None, files=[entry["file"]], rebinned_dies=[entry["rebinned_dies"]]
            )
        else:
            merged[entry["spec"]]["files"].append(entry["file"])
            merged[entry["spec"]]["rebinned_dies"].append(entry["rebinned_dies"])
    return kept + list(merged.values())


def _localtime_entries(
    run: Run, fab: str, day: dt.date, wafer_files: list[Path], ft_files: list[Path]
) -> list[dict]:
    """One faults.json entry per clock offset, listing the files whose times it shifted."""
    shifted: dict[tuple[int, Fault], list[Path]] = {}
    for files, tested in ((wafer_files, day), (ft_files, ft_landing_day(run.faults, fab, day))):
        shift, fault = clock_shift(run.faults, fab, tested)
        if fault is not None:
            shifted.setdefault((shift, fault), []).extend(files)
    return [
        _fault_entry(
            run.root, fab, day, fault, None, offset_hours=shift / 3600, fields=LOCALTIME_FIELDS, files=files
        )
        for (shift, fault), files in shifted.items()
    ]


def _dialect_entries(run: Run, fab: str, day: dt.date, wafer_files: list[Path]) -> list[dict]:
    """One faults.json entry per fab-day written in the dialect: the unit rules applied (standard
    name pattern -> [from unit, to unit, factor]), the renamed tests and the files."""
    fault = dialect_fault(run.faults, fab, day)
    if fault is None:
        return []
    return [
        _fault_entry(run.root, fab, day, fault, None, **dialect_mapping(run.scale.n_ptr), files=wafer_files)
    ]


def lot_base(seed: int, fab: str, day: dt.date, lot_index: int) -> np.ndarray:
    """Latent factors shared by a lot's wafers: fab offset, the day's drift and a lot effect."""
    rng = np.random.default_rng([seed, _fab_index(fab), day.toordinal(), lot_index, 0, 3])
    return np.array(FABS[fab].offset) + day_drift(day, seed) + rng.normal(0, PROCESS.lot_sigma)


def _fault_targets(run: Run, fab: str, day: dt.date, wafers: int) -> dict[int, list[Fault]]:
    """Which wafer each file fault hits (different wafers while there are enough)."""
    targets: dict[int, list[Fault]] = {}
    for fault in run.faults:
        if FAULT_KINDS[fault.kind].target in ("content", "file", "results") and fault.covers(fab, day):
            free = [k for k in range(wafers) if k not in targets] or list(range(wafers))
            k = free[int(_fault_rng(run.seed, fault, fab, day).integers(len(free)))]
            targets.setdefault(k, []).append(fault)
    return targets


def final_test_day(run: Run, fab: str, day: dt.date, good: dict[int, list[dict]]) -> tuple[list[Path], dict]:
    """FT files of a day's lots (one per lot, landing the next delivering day) and the truth rows."""
    landing = ft_landing_day(run.faults, fab, day)
    shift, _ = clock_shift(run.faults, fab, landing)
    rng = np.random.default_rng([run.seed, _fab_index(fab), day.toordinal(), 0, 0, 4])
    start = epoch(landing) + int(rng.uniform(3600, 4 * 3600))
    files, truth = [], []
    for lot_index, wafers in sorted(good.items()):
        units = {k: np.concatenate([w[k] for w in wafers]) for k in ("x", "y", "latent", "p_fail", "causes")}
        units["wafer"] = np.concatenate([np.full(len(w["x"]), w["wafer"]) for w in wafers])
        lot = wafers[0]["lot"]
        stream, end, failed = final_test_lot(run.seed, fab, day, lot_index, lot, units, start, shift)
        path = run.root / "landing" / fab / landing.isoformat() / f"FT_{lot}.stdf.gz"
        write_landing(path, stream.content(), FABS[fab].ft_tester.byte_order, run.scale.compresslevel, end)
        files.append(path)
        truth.append(
            dict(
                lot_id=np.full(len(failed), lot),
                wafer_id=units["wafer"],
                x_coord=units["x"],
                y_coord=units["y"],
                p_fail_true=units["p_fail"],
                ft_failed=failed,
            )
        )
        start = end + int(rng.uniform(600, 2400))
    return files, {k: np.concatenate([t[k] for t in truth]) for k in truth[0]} if truth else {}


TRUTH_COLUMNS = ("lot_id", "wafer_id", "x_coord", "y_coord", "p_fail_true", "ft_failed")


def write_truth(path: Path, truth: dict[str, np.ndarray]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("lot_id", pa.string()),
            ("wafer_id", pa.string()),
            ("x_coord", pa.int16()),
            ("y_coord", pa.int16()),
            ("p_fail_true", pa.float64()),
            ("ft_failed", pa.bool_()),
        ]
    )
    table = pa.table({c: truth.get(c, []) for c in TRUTH_COLUMNS}, schema=schema)
    table = table.sort_by(
        [
            ("lot_id", "ascending"),
            ("wafer_id", "ascending"),
            ("y_coord", "descending"),
            ("x_coord", "ascending"),
        ]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def _fault_entry(root: Path, fab: str, day: dt.date, fault: Fault, path: Path | None, **detail: Any) -> dict:
    def rel(p: Any) -> Any:
        return Path(p).relative_to(root).as_posix() if isinstance(p, Path) else p

    entry = dict(spec=fault.text, kind=fault.kind, fab=fab, date=day.isoformat(), file=rel(path))
    entry["what"] = FAULT_KINDS[fault.kind].what
    return entry | {k: [rel(p) for p in v] if isinstance(v, list) else rel(v) for k, v in detail.items()}


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve, ties counted half: the value of sklearn's roc_auc_score
    (Mann-Whitney form, without importing scikit-learn's 2 s of modules)."""
    y_true, score = np.asarray(y_true, dtype=bool), np.asarray(score, dtype=float)
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2  # average 1-based rank of each distinct score
    positives, negatives = int(y_true.sum()), int((~y_true).sum())
    rank_sum = mid_rank[inverse][y_true].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def oracle_auc(truth: Any) -> dict[str, Any]:
    """AUC of p_fail_true against ft_failed: what a perfect model would reach."""
    y, p = np.asarray(truth["ft_failed"]), np.asarray(truth["p_fail_true"])
    auc = roc_auc(y, p) if 0 < y.sum() < len(y) else None
    return dict(auc=None if auc is None else round(auc, 4), dies=len(y), ft_failed=int(y.sum()))


def update_oracle(root: Path, days: Iterable[dt.date]) -> dict[str, Any]:
    """(Re)compute the oracle AUC of the given days from the truth files, merged into oracle.json."""
    import pyarrow.parquet as pq

    path = root / "truth" / "oracle.json"
    oracle = json.loads(path.read_text()) if path.exists() else {}
    by_day = oracle.get("days", {})
    for day in days:
        files = sorted((root / "truth").glob(f"*/{day.isoformat()}.parquet"))
        tables = {
            f.parent.name: pq.read_table(f, columns=["p_fail_true", "ft_failed"]).to_pydict() for f in files
        }
        tables = {fab: t for fab, t in tables.items() if t["ft_failed"]}
        if not tables:
            by_day.pop(day.isoformat(), None)
            continue
        pooled = {k: np.concatenate([t[k] for t in tables.values()]) for k in ("p_fail_true", "ft_failed")}
        by_day[day.isoformat()] = oracle_auc(pooled) | {
            "fabs": {f: oracle_auc(t) for f, t in sorted(tables.items())}
        }
    oracle = {
        "definition": "roc_auc_score(ft_failed, p_fail_true) over the dies of a wafer-sort day "
        "(truth/{fab}/{day}.parquet); per fab under 'fabs'",
        "days": dict(sorted(by_day.items())),
    }
    _write_json(path, oracle)
    return oracle


def update_faults(root: Path, simulated: set[tuple[str, str]], entries: list[dict]) -> list[dict]:
    """Merge this run's fault entries into faults.json, replacing those of re-simulated fab-days."""
    path = root / "truth" / "faults.json"
    old = json.loads(path.read_text())["faults"] if path.exists() else []
    kept = [e for e in old if (e["fab"], e["date"]) not in simulated]
    faults = sorted(kept + entries, key=lambda e: (e["date"], e["fab"], e["kind"], e.get("file") or ""))
    _write_json(path, {"grammar": FAULT_GRAMMAR, "faults": faults})
    return faults


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def write_truth_readme(root: Path, faults: list[dict]) -> None:
    lines = [
        "# Ground truth of the simulated test floor (written by jobs/simulation/simulate.py; never in STDF)",
        "",
        "- `{fab}/{date}.parquet`: one row per die that passed wafer sort on that date and got final test",
        "  (its FT file lands in `landing/{fab}/{date+1}/FT_{lot}.stdf.gz`): lot_id (str), wafer_id (str,",
        "  '01'..'25'), x_coord (int16), y_coord (int16), p_fail_true (float64), ft_failed (bool).",
        "- `oracle.json`: AUC of p_fail_true against ft_failed per day and per fab-day (a perfect model).",
        "- `faults.json`: the faults applied, one entry per damaged file or fab-day; byte offsets are in",
        "  the decompressed STDF stream, counted from the FAR. A `dialect` entry maps the standard test",
        "  names and units to the fab's (dialect value = standard value x factor; TEST_NUMs unchanged).",
        "",
        "All STDF times are UTC epoch seconds, except where a `localtime` fault below says otherwise:",
        "there the MIR, WIR, WRR and MRR times are the fab's local time (UTC + offset_hours).",
        "",
        "## Faults applied",
        "",
    ]
    if any(FAULT_KINDS[e["kind"]].target in ("results", "measurement") for e in faults):
        lines[-2:-2] = [  # only then, so that runs without them keep their README
            "A `missing`, `outlier` or `drift` fault changes what wafer-sort files say was measured;",
            "the dies, their final test and the truth here are those of the run without it.",
            "",
        ]
    for e in faults or [{"kind": "none"}]:
        if e["kind"] == "none":
            lines.append("None.")
        elif e["kind"] == "localtime":
            files = len(e["files"])
            lines.append(
                f"- {e['date']} {e['fab']}: localtime UTC{e['offset_hours']:+g} h in {files} file(s)"
            )
        elif e["kind"] == "missing":
            lines.append(
                f"- {e['date']} {e['fab']}: missing {len(e['tests'])} test(s) in {e['file']}:"
                f" {', '.join(e['tests'])}"
            )
        elif e["kind"] == "outlier":
            lines.append(
                f"- {e['date']} {e['fab']}: outlier {e['test']} = {e['value']:g} {e['units']} on"
                f" {e['dies']} dies in {e['file']}"
            )
        elif e["kind"] == "drift":
            lines.append(
                f"- {e['date']} {e['fab']}: drift {e['family']}* {e['shift_sigmas']:+g} sigma in"
                f" {len(e['files'])} wafer-sort file(s) (see faults.json)"
            )
        elif e["kind"] == "dialect":
            units = ", ".join(f"{p} {a}->{b} x{f:g}" for p, (a, b, f) in e["units"].items())
            lines.append(
                f"- {e['date']} {e['fab']}: dialect in {len(e['files'])} wafer-sort file(s): {units};"
                f" {len(e['renames'])} tests renamed (see faults.json)"
            )
        else:
            where = f" at byte {e['byte_offset']}" if "byte_offset" in e else ""
            lines.append(f"- {e['date']} {e['fab']}: {e['kind']} {e['file'] or ''}{where}".rstrip())
    (root / "truth" / "README.md").write_text("\n".join(lines) + "\n")


def write_ready(folder: Path) -> None:
    """The empty marker that a fab's day is complete, dated like its newest file."""
    latest = max((p.stat().st_mtime for p in folder.iterdir()), default=None)
    (folder / "_READY").touch()
    if latest is not None:
        os.utime(folder / "_READY", (latest, latest))


def ready_after(run: Run) -> dict[tuple[str, dt.date], set[tuple[str, dt.date]]]:
    """For each fab-day that gets a _READY: the fab-days whose files must land first (its own
    wafer sort and the final test of earlier days landing that day)."""
    needs = {
        (fab, day): {(fab, day)}
        for day in run.days
        for fab in run.fabs
        if not is_offline(run.faults, fab, day)
    }
    for fab, day in list(needs):
        landing = ft_landing_day(run.faults, fab, day)
        if (fab, landing) in needs:
            needs[(fab, landing)].add((fab, day))
    return needs


def simulate(run: Run, progress: bool = True, jobs: int | None = None) -> dict[str, Any]:
    """Simulate every fab-day of a run (on `jobs` processes); returns a summary.

    A _READY is written as soon as everything landing in its folder is written.
    """
    from tqdm import tqdm

    began = time.perf_counter()
    fab_days = [(fab, day) for day in run.days for fab in run.fabs]
    wafers = {fd: 0 if is_offline(run.faults, *fd) else run.scale.lots * run.scale.wafers for fd in fab_days}
    needs, done = ready_after(run), set()
    entries: list[dict] = []
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(fab_days)))
    with _executor(jobs) as pool:
        results = pool.map(_fab_day, [(run, *fd) for fd in fab_days])  # workers start before tqdm's thread
        with tqdm(
            total=sum(wafers.values()), unit="wafer", delay=3, disable=None if progress else True
        ) as bar:
            for (fab, day), found in zip(fab_days, results, strict=True):
                entries += found
                done.add((fab, day))
                bar.update(wafers[(fab, day)])
                for key in [k for k, need in needs.items() if need <= done]:
                    write_ready(run.root / "landing" / key[0] / key[1].isoformat())
                    del needs[key]
    faults = update_faults(run.root, {(fab, day.isoformat()) for fab, day in fab_days}, entries)
    write_truth_readme(run.root, faults)
    oracle = update_oracle(run.root, run.days)
    seconds = round(time.perf_counter() - began, 2)
    return dict(wafers=sum(wafers.values()), seconds=seconds, faults=entries, oracle=oracle)


def _fab_day(job: tuple[Run, str, dt.date]) -> list[dict]:
    return simulate_fab_day(*job)


def _executor(jobs: int) -> Any:
    """A process pool (fork: workers share the loaded modules), or in-process for one job."""
    if jobs == 1:
        return _Serial()
    import concurrent.futures
    import multiprocessing

    return concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"))


class _Serial:
    def map(self, fn: Callable, items: Iterable) -> Iterable:
        return map(fn, items)

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


# =============================================================================================
# Command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints the usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_run(args: argparse.Namespace) -> Run:
    """Check the command line and turn it into a Run (ValueError with a one-line message)."""
    start = parse_date(args.start)
    fabs = tuple(f.strip() for f in args.fabs.split(",") if f.strip())
    unknown = [f for f in fabs if f not in FABS]
    if unknown or not fabs:
        raise ValueError(f"unknown fab {', '.join(unknown) or '(none)'} (known: {', '.join(FABS)})")
    scale = PRESETS[args.scale]
    scale = replace(scale, lots=args.lots or scale.lots, wafers=args.wafers or scale.wafers)
    if scale.wafers > 25:
        raise ValueError(f"--wafers {scale.wafers}: a lot has at most 25 wafers")
    if scale.lots > 26 * 99:
        raise ValueError(f"--lots {scale.lots}: at most {26 * 99} lots per fab and day")
    faults = parse_faults(args.faults)
    days = tuple(start + dt.timedelta(days=i) for i in range(args.days))
    for fault in faults:
        if fault.fab not in fabs or fault.last < days[0] or fault.first > days[-1]:
            print(f"simulate: warning: fault {fault.text} hits no simulated fab-day", file=sys.stderr)
    return Run(Path(args.root), days, fabs, scale, args.seed, tuple(faults))


def _faults_help() -> str:
    lines = ["faults (--faults KIND:FAB:DATE[..DATE][:PARAM],...):"]
    for kind, spec in FAULT_KINDS.items():
        param = f" PARAM: {spec.param}." if spec.param else ""
        lines.append(f"  {kind:<11} {spec.what}.{param}")
    lines.append("example: --faults offline:fab2:2026-11-18,localtime:fab2:2026-11-01..2026-11-30:+8")
    lines.append("         --faults dialect:fab3:2026-11-16..2026-11-22")
    lines.append(
        "         --faults missing:fab1:2026-11-17:5,outlier:fab2:2026-11-18,drift:fab3:2026-11-19:-2"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(
        prog="simulate",
        description="Wafer-sort and final-test STDF in ROOT/landing, truth in ROOT/truth",
        epilog=_faults_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", required=True, help="data root (landing/ and truth/ are created below it)")
    parser.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--days", type=_positive, required=True, help="number of days")
    parser.add_argument("--fabs", default=",".join(FABS), help=f"comma-separated (default {','.join(FABS)})")
    parser.add_argument("--scale", choices=sorted(PRESETS), default="demo", help="preset (default demo)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--lots", type=_positive, help="lots per fab and day (overrides the preset)")
    parser.add_argument("--wafers", type=_positive, help="wafers per lot, 1..25 (overrides the preset)")
    parser.add_argument("--faults", default="", help="faults to inject: " + FAULT_GRAMMAR)
    parser.add_argument("--jobs", type=_positive, help="worker processes (default: one per CPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        run = build_run(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        summary = simulate(run, progress=not args.quiet, jobs=args.jobs)
    except OSError as exc:  # e.g. a root we may not write to
        print(f"simulate: error: {exc}", file=sys.stderr)
        return 1
    aucs = [d["auc"] for d in summary["oracle"]["days"].values() if d["auc"] is not None]
    auc = f"; oracle AUC {min(aucs):.3f}..{max(aucs):.3f}" if aucs else ""
    print(
        f"simulated {len(run.fabs)} fab(s) x {len(run.days)} day(s): {summary['wafers']} wafers, "
        f"{len(summary['faults'])} fault(s) in {summary['seconds']:.1f} s{auc} -> {run.root}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
