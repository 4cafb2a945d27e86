"""The floor model: fabs and their testers, scale presets, the hidden process factors, the wafer map
and its probing, the dies of a wafer, and a fab-day's plan of lots and wafers.

See jobs/simulation/README.md for the model; everything here is seeded per (seed, fab, day, lot, wafer).
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
from dataclasses import dataclass

import numpy as np


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


def lot_id(fab: str, day: dt.date, index: int) -> str:
    """F{fab code}A{yy}{day of year}{letter}{nn}, e.g. F1A26327A01: unique across fabs and days."""
    return (
        f"F{FABS[fab].code}A{day:%y}{day.timetuple().tm_yday:03d}{chr(65 + index // 99)}{index % 99 + 1:02d}"
    )


def epoch(day: dt.date) -> int:
    return calendar.timegm(day.timetuple())


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
    first = int(np.random.default_rng([seed, fab_index(fab), day.toordinal(), 2]).integers(testers))
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


def fab_index(fab: str) -> int:
    """1-based place of a fab in FABS: part of every seed."""
    return list(FABS).index(fab) + 1


def lot_base(seed: int, fab: str, day: dt.date, lot_index: int) -> np.ndarray:
    """Latent factors shared by a lot's wafers: fab offset, the day's drift and a lot effect."""
    rng = np.random.default_rng([seed, fab_index(fab), day.toordinal(), lot_index, 0, 3])
    return np.array(FABS[fab].offset) + day_drift(day, seed) + rng.normal(0, PROCESS.lot_sigma)
