"""A run of the simulator: every fab-day (in worker processes) sorts its wafers, final-tests the
good dies and lands the files, then the truth is merged and each day's _READY written."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.simulation.faults import (
    FAULT_KINDS,
    LOCALTIME_FIELDS,
    Fault,
    clock_shift,
    dialect_fault,
    fault_rng,
    ft_landing_day,
    is_offline,
    measurement_faults,
    process_shift,
)
from jobs.simulation.floor import FABS, PRESETS, Scale, WaferPlan, epoch, fab_index, lot_base, plan_day
from jobs.simulation.insertions import final_test_lot, sort_wafer
from jobs.simulation.programs import dialect_mapping
from jobs.simulation.records import write_landing
from jobs.simulation.truth import (
    fault_entry,
    merge_measurement_entries,
    update_faults,
    update_oracle,
    write_truth,
    write_truth_readme,
)


@dataclass(frozen=True)
class Run:
    root: Path
    days: tuple[dt.date, ...]
    fabs: tuple[str, ...] = tuple(FABS)
    scale: Scale = PRESETS["demo"]
    seed: int = 0
    faults: tuple[Fault, ...] = ()


def simulate_fab_day(run: Run, fab: str, day: dt.date) -> list[dict]:
    """Sort a fab's wafers of one day, final-test its good dies (landing the next day) and write
    the truth. Returns the faults applied, as faults.json entries. (_READY is the caller's.)"""
    (run.root / "landing" / fab / day.isoformat() / "_READY").unlink(missing_ok=True)  # if re-simulated
    if is_offline(run.faults, fab, day):
        offline = [f for f in run.faults if f.kind == "offline" and f.covers(fab, day)]
        return [fault_entry(run.root, fab, day, f, None, detail="no files, no _READY") for f in offline]
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
        merge_measurement_entries(entries)
        + _localtime_entries(run, fab, day, wafer_files, ft_files)
        + _dialect_entries(run, fab, day, wafer_files)
        + _shift_entries(run, fab, day, ft_files, truth)
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
    strength, _ = process_shift(run.faults, fab, day)  # the wafer-sort day's, whenever final test runs
    wafer = sort_wafer(run.seed, fab, day, plan, run.scale, base, shift, dialect, damaging, strength)
    path = run.root / "landing" / fab / day.isoformat() / f"{plan.lot}_{plan.wafer:02d}.stdf.gz"
    content, offsets, entries = wafer.content, wafer.offsets, []
    for fault in (f for f in run.faults if FAULT_KINDS[f.kind].target == "structure" and f.covers(fab, day)):
        content, offsets, detail = FAULT_KINDS[fault.kind].apply(content, offsets)  # every file of the day
        entries.append(fault_entry(run.root, fab, day, fault, path, **detail))
    for fault, detail in wafer.damage:  # a measurement fault's entries are merged per fab-day
        entries.append(fault_entry(run.root, fab, day, fault, path, **detail))
    for fault in faults:
        if FAULT_KINDS[fault.kind].target == "content":
            content, detail = FAULT_KINDS[fault.kind].apply(
                content, offsets, fault_rng(run.seed, fault, fab, day)
            )
            entries.append(fault_entry(run.root, fab, day, fault, path, **detail))
    write_landing(
        path, content, FABS[fab].testers[plan.tester].byte_order, run.scale.compresslevel, wafer.end
    )
    for fault in faults:
        if FAULT_KINDS[fault.kind].target == "file":
            detail = FAULT_KINDS[fault.kind].apply(path, fault_rng(run.seed, fault, fab, day))
            entries.append(fault_entry(run.root, fab, day, fault, path, **detail))
    return path, dict(wafer.passing, wafer=f"{plan.wafer:02d}", lot=plan.lot), entries


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
        fault_entry(
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
        fault_entry(run.root, fab, day, fault, None, **dialect_mapping(run.scale.n_ptr), files=wafer_files)
    ]


def _shift_entries(run: Run, fab: str, day: dt.date, ft_files: list[Path], truth: dict) -> list[dict]:
    """One faults.json entry per fab-day sorted under a process shift: its strength, the truth
    file and the final-test files whose outcomes follow the shifted mechanism, and their figures."""
    strength, fault = process_shift(run.faults, fab, day)
    if fault is None:
        return []
    failed, p_fail = truth.get("ft_failed", np.zeros(0, bool)), truth.get("p_fail_true", np.zeros(0))
    return [
        fault_entry(
            run.root,
            fab,
            day,
            fault,
            run.root / "truth" / fab / f"{day.isoformat()}.parquet",
            strength=strength,
            files=ft_files,
            dies=len(failed),
            ft_failed=int(failed.sum()),
            mean_p_fail_true=round(float(p_fail.mean()), 6) if len(p_fail) else None,
        )
    ]


def _fault_targets(run: Run, fab: str, day: dt.date, wafers: int) -> dict[int, list[Fault]]:
    """Which wafer each file fault hits (different wafers while there are enough)."""
    targets: dict[int, list[Fault]] = {}
    for fault in run.faults:
        if FAULT_KINDS[fault.kind].target in ("content", "file", "results") and fault.covers(fab, day):
            free = [k for k in range(wafers) if k not in targets] or list(range(wafers))
            k = free[int(fault_rng(run.seed, fault, fab, day).integers(len(free)))]
            targets.setdefault(k, []).append(fault)
    return targets


def final_test_day(run: Run, fab: str, day: dt.date, good: dict[int, list[dict]]) -> tuple[list[Path], dict]:
    """FT files of a day's lots (one per lot, landing the next delivering day) and the truth rows."""
    landing = ft_landing_day(run.faults, fab, day)
    shift, _ = clock_shift(run.faults, fab, landing)
    rng = np.random.default_rng([run.seed, fab_index(fab), day.toordinal(), 0, 0, 4])
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
