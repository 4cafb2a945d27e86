"""The test programs: parametric (PTR) families and functional (FTR) tests, bins, the wafer-sort
program, its other dialect (the `dialect` fault) and the final-test program."""

from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from jobs.simulation.floor import LATENTS

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


HARD_OF_SOFT = np.zeros(max(SOFT_BINS) + 1, dtype=np.uint16)
for _soft, (_name, _hard) in SOFT_BINS.items():
    HARD_OF_SOFT[_soft] = _hard
