"""One test insertion each: sorting a wafer (under any results faults) and final-testing a lot,
as STDF streams with what the next step needs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs.domain.part_text import format_part_txt
from jobs.simulation.faults import Fault, damage_wafer, fault_rng
from jobs.simulation.floor import (
    FABS,
    PROCESS,
    Die,
    Scale,
    WaferPlan,
    fab_index,
    make_dies,
    neighbour_fail_share,
    probe_order,
)
from jobs.simulation.measure import (
    Results,
    final_test_results,
    ft_fail_probability,
    measure,
    retest_draw,
    retested,
    stack,
    take,
)
from jobs.simulation.programs import dialect_program, final_test_program, wafer_sort_program
from jobs.simulation.records import Parts, Stream, header_records, part_stream, summary_records


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
    process_shift: float = 0.0,
) -> SortedWafer:
    """Test one wafer: the STDF stream and what final test needs about its good dies. With
    `dialect` the stream is written in the fab's own test-program dialect (`dialect_program`);
    the dies, results and bins are the same. Results `faults` (missing, outlier, drift) change
    what the stream says (`damage_wafer`), not the dies, their final test or the truth. A
    `process_shift` (the shift fault's strength) changes how the good dies' chance to fail final
    test follows from their results (`ft_fail_probability`), not the stream."""
    rng = np.random.default_rng([seed, fab_index(fab), day.toordinal(), plan.lot_index, plan.wafer, 0])
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
        program, value, dies, neighbour_fail_share(dies.x, dies.y, ~passed), scale.wafer_radius, process_shift
    )
    duration = min(test_seconds(parts), plan.slot_length - 60)
    start = plan.slot_start + int(rng.uniform(0, max(plan.slot_length - 60 - duration, 1)))
    end = start + int(duration)
    damage: list[tuple[Fault, dict[str, Any]]] = []
    if faults:  # the file says what the damaged flow measured; the wafer's times stay
        rngs = [fault_rng(seed, f, fab, day) for f in faults]
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
    rng = np.random.default_rng([seed, fab_index(fab), day.toordinal(), lot_index, 0, 1])
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
        format_part_txt(lot, units["wafer"][order], units["x"][order], units["y"][order]),
    )
    end = start + int(test_seconds(parts, index_s=0.45, load_s=300.0))
    stream = Stream(tester.byte_order)
    stream.add("FAR", CPU_TYPE=1 if tester.byte_order == ">" else 2, STDF_VER=4)
    header_records(stream, FABS[fab], tester, program, lot, start - 900 + shift, start + shift)
    stream.add_block(part_stream(program, parts, tester.byte_order))
    summary_records(stream, program, parts)
    stream.add("MRR", FINISH_T=end + shift, DISP_COD=" ", USR_DESC="", EXC_DESC="")
    return stream, end, failed
