"""Running a program on dies: parametric values, defects, functional failures, binning at the first
failure, retests, and the true chance that a die passing wafer sort fails final test."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jobs.simulation.floor import PROCESS, Die
from jobs.simulation.programs import HARD_OF_SOFT, Program


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
    return bin_results(program, value, failed, num_fail)


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


def bin_results(program: Program, value: np.ndarray, failed: np.ndarray, num_fail: np.ndarray) -> Results:
    any_fail = failed.any(axis=1)
    first = np.where(any_fail, failed.argmax(axis=1), len(program) - 1)
    num_test = first + 1
    soft = np.where(any_fail, program.soft_bin[first], 1)
    hard = HARD_OF_SOFT[soft]
    test_ms = 4.0 + np.concatenate([[0.0], np.cumsum(program.time_ms)])[num_test]
    return Results(value, failed, num_fail, num_test, soft, hard, np.round(test_ms).astype(np.uint32))


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
    program: Program,
    value: np.ndarray,
    dies: Die,
    neighbours: np.ndarray,
    radius: float,
    shift: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The true chance that a die which passed wafer sort fails final test, and the main causes.

    Nonlinear in three wafer-sort results (IDDQ leakage, ring-oscillator speed, threshold
    voltage), plus the neighbourhood (failing neighbours, local defect density, edge) and the
    hidden reliability factor. Returns p and the (parts, 3) weights of leakage, speed and
    functional/reliability causes, used to pick the test a failing part fails. With `shift`
    (the `shift` fault's strength, 0..1) the logit and the causes move that far towards the
    shifted mechanism (`shifted_ft_terms`).
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
    causes = np.stack([leakage, speed, np.maximum(other, 0)], axis=1)
    if shift:
        shifted_logit, shifted_causes = shifted_ft_terms(program, value, dies, neighbours)
        logit = (1 - shift) * logit + shift * shifted_logit
        causes = (1 - shift) * causes + shift * shifted_causes
    causes += 0.05
    return np.exp(-np.logaddexp(0, -logit)), causes / causes.sum(axis=1, keepdims=True)  # sigmoid


SHIFTED_BASE_LOGIT = PROCESS.ft_base_logit + 0.5  # with the terms: ~12% of dies fail final test, not ~6%


def shifted_ft_terms(
    program: Program, value: np.ndarray, dies: Die, neighbours: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Final-test failure after a process shift (the `shift` fault): the logit and the causes.

    Another mechanism dominates: high contact resistance (RCONT_M1, unused before), fast dies
    (FMAX_RO1 high: the speed dependency's sign flipped) and the hidden reliability factor
    with its sign flipped (dies the stress screen passed as robust now fail); leakage, the
    threshold voltage and the edge no longer matter, and defects (failing neighbours, density)
    half as much. A model of the old mechanism ranks these dies about at chance (AUC ~0.5).
    """
    z_rcont = key_test_z(program, value, "RCONT_M1")
    z_fmax = key_test_z(program, value, "FMAX_RO1")
    contact = 2.5 * np.logaddexp(0, 2.5 * (z_rcont - 1.4))
    fast = 1.2 * np.maximum(z_fmax - 0.4, 0) ** 2
    other = 1.0 * neighbours + 3.2 * dies.density - 1.1 * dies.latent[:, 4]
    causes = np.stack([np.zeros_like(fast), fast, contact + np.maximum(other, 0)], axis=1)
    return SHIFTED_BASE_LOGIT + contact + fast + other, causes


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
    return bin_results(program, value, failed, num_fail)
