"""What several benchmarks of scripts/bench share: the repo, the simulated floors they start
from, and the workflows run as a user types them (`luigi ... RangeDaily`, `RangeHourly`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PIPELINE_START = "2026-11-01"


def luigi_range(
    root: Path,
    start: str,
    stop: str,
    workers: int,
    of: str = "WaferYieldDaily",
    extra: tuple[str, ...] = (),
    scheduler_port: int | None = None,
) -> tuple[float, subprocess.CompletedProcess]:
    """`luigi ... RangeDaily --of WaferYieldDaily` (or RangeHourly --of FabMergeHourly) as a user
    types it, with the local scheduler or luigid on 127.0.0.1:`scheduler_port`; wall seconds and
    the finished process."""
    command = luigi_command(root, start, stop, workers, of, extra, scheduler_port)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    _check(command, done)
    return time.perf_counter() - started, done


def luigi_command(
    root: Path,
    start: str,
    stop: str,
    workers: int,
    of: str = "WaferYieldDaily",
    extra: tuple[str, ...] = (),
    scheduler_port: int | None = None,
) -> list[str]:
    daily = of == "WaferYieldDaily"
    module, range_task = ("jobs.wafer_yield", "RangeDaily") if daily else ("jobs.fab_merge", "RangeHourly")
    scheduler = (
        ["--scheduler-host", "127.0.0.1", "--scheduler-port", str(scheduler_port)]
        if scheduler_port
        else ["--local-scheduler"]
    )
    return [
        sys.executable, "-m", "luigi", "--module", module,
        range_task, "--of", of, "--start", start, "--stop", stop,
        *scheduler, "--workers", str(workers), "--paths-root", str(root), "--log-level", "WARNING",
        *extra,
    ]  # fmt: skip


def _check(command: list[str], done: subprocess.CompletedProcess) -> None:
    if done.returncode != 0:
        raise SystemExit(f"scripts/bench: {' '.join(command)} failed:\n{done.stderr[-2000:]}")


def run_watched(command: list[str]) -> tuple[float, dict[int, float]]:
    """Run a command, polling the peak RSS (VmHWM) of it and every process below it (luigi forks a
    process per task when it has several workers); wall seconds and the peak MB by pid."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, float] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for pid in [process.pid, *descendants(process.pid)]:
                peaks[pid] = max(peaks.get(pid, 0.0), _peak_rss_mb(pid))
            stop.wait(0.2)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    out, err = process.communicate()
    seconds = time.perf_counter() - started
    stop.set()
    watcher.join()
    _check(command, subprocess.CompletedProcess(command, process.returncode, out, err))
    return seconds, {pid: mb for pid, mb in peaks.items() if mb}


def descendants(pid: int) -> list[int]:
    """The processes below `pid`, from /proc (children of children included)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _peak_rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError, StopIteration), open(f"/proc/{pid}/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmHWM"))) / 1024
    return 0.0


INPUTS = ("landing", "truth")  # a floor's own files: shared by every configuration, never copied


def sizes(args: argparse.Namespace) -> list[str]:
    """The simulator's --lots and --wafers, where the bench's command line sets them."""
    return [
        *(["--lots", str(args.lots)] if args.lots else []),
        *(["--wafers", str(args.wafers)] if args.wafers else []),
    ]


def snapshot(root: Path, copy: Path) -> None:
    """A copy of the outputs (not the floor's own files): each configuration starts from it."""
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir(parents=True)
    for entry in root.iterdir():
        if entry.name not in INPUTS:
            shutil.copytree(entry, copy / entry.name, symlinks=True)


def restore(snapshot: Path, root: Path) -> None:
    for entry in root.iterdir():
        if entry.name not in INPUTS:
            shutil.rmtree(entry)
    for entry in snapshot.iterdir():
        shutil.copytree(entry, root / entry.name, symlinks=True)


def measure_range(
    root: Path, start: str, stop: str, files: list[Path], workers: int, scheduler: str, extra: tuple = ()
) -> dict:
    """One `luigi ... RangeDaily --of WaferYieldDaily` over start..stop, with the local scheduler or
    through luigid (started for it), with `workers`: its wall seconds and, from the run history,
    the tasks it ran and their seconds by family (a task with dynamic dependencies, as IngestFab
    with its ConvertFiles, counts from its first start: its waits are in); peak RSS of its
    processes; bytes written per byte of the landed `files`."""
    before = _output_bytes(root)
    known = max((run["id"] for run in _runs(root)), default=0)  # a caller's invocation id may be inherited
    port = _start_luigid(root) if scheduler == "luigid" else None
    try:
        seconds, peaks = run_watched(
            luigi_command(root, start, stop, workers, extra=extra, scheduler_port=port)
        )
    finally:
        if port:
            _stop_luigid(root)
    tasks = [run for run in _runs(root) if run["id"] > known and run["status"] == "DONE"]
    stages: dict[str, float] = defaultdict(float)
    rss: dict[str, float] = defaultdict(float)  # a task's process is its own only with several workers
    for run in tasks:
        stages[run["family"]] += run["seconds"] or 0.0
        rss[run["family"]] = max(rss[run["family"]], peaks.get(run["pid"], 0.0))
    landed = sum(f.stat().st_size for f in files)
    return {
        "scheduler": scheduler,
        "workers": workers,
        "seconds": round(seconds, 2),
        "tasks": len(tasks),
        "stage_seconds_note": "run-history seconds summed per task family; IngestFab's include the waits "
        "for its dynamic ConvertFile dependencies",
        "stage_seconds": {k: round(v, 2) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])},
        "peak_rss_mb_per_worker": round(max(peaks.values()), 1),
        "peak_rss_mb_by_family": {k: round(v) for k, v in sorted(rss.items(), key=lambda kv: -kv[1])}
        if workers > 1
        else "one process: see peak_rss_mb_per_worker",
        "processes": len(peaks),
        "bytes_written_per_byte_read": round((_output_bytes(root) - before) / landed, 3),
        "scratch_bytes_per_byte_read": round(_scratch_bytes(root, files) / landed, 3),
    }


def _output_bytes(root: Path) -> int:
    """Bytes below the root outside the floor's own files (luigid's and the caches' included)."""
    return sum(
        p.stat().st_size
        for entry in root.iterdir()
        if entry.name not in INPUTS
        for p in entry.rglob("*")
        if p.is_file() and not p.is_symlink()
    )


def _scratch_bytes(root: Path, files: list[Path]) -> int:
    """The plain copies the day's conversions wrote (and removed), from their manifests."""
    names = {str(f.resolve()) for f in files}
    total = 0
    for manifest in root.glob("converted/v*/*/manifest.json"):
        facts = json.loads(manifest.read_text())
        if facts.get("input", {}).get("path") in names:
            total += facts["input"].get("decompressed", {}).get("bytes", 0)
    return total


def _runs(root: Path) -> list[dict]:
    db = root / "history" / "runs.sqlite"
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        return [dict(row) for row in con.execute("SELECT id, family, status, seconds, pid FROM runs")]


def _start_luigid(root: Path) -> int:
    """`scripts/luigid start` for the root on a free port of 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _luigid("start", root, "--port", str(port))
    return port


def _stop_luigid(root: Path) -> None:
    _luigid("stop", root)


def _luigid(action: str, root: Path, *options: str) -> None:
    command = [sys.executable, "-m", "jobs.ops.luigid", action, "--root", str(root), *options]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SystemExit(f"scripts/bench: {' '.join(command)} failed: {done.stdout}{done.stderr}")


def simulate_floor(root: Path, days: int, *extra: str, start: str = PIPELINE_START) -> None:
    from jobs.simulation.simulate import main as simulate

    shutil.rmtree(root, ignore_errors=True)
    simulate(["--root", str(root), "--start", start, "--days", str(days), "--quiet", *extra])
