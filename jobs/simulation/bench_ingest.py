"""`scripts/bench ingest`: STDF reading, our arrow and pystdf engines against stdf-convert's raw
streaming parse, on lot2, lot3 and simulated bench-scale wafer files (a whole wafer, an eighth of
one, and one four times its size), each in its own process so that peak RSS is its own."""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from jobs.simulation.bench_tools import REPO

SHARED_STDF = REPO.parent / "shared" / "stdf"

RAW_PARSE = """
import sys, time, stdf_convert
start = time.perf_counter()
records = 0
for _, batch in stdf_convert.batches(sys.argv[1]):
    records += batch.num_rows
print(time.perf_counter() - start, records)
"""

# Runs a command's module and reports its peak RSS (VmHWM) on exit. ru_maxrss from wait4 would
# not do: Linux carries the high-water mark across fork and exec, so every child would report
# at least this benchmark's own peak.
PEAK_RSS = """
import atexit, runpy, sys
def report():
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    print(f"peak-rss-kb {kb}", file=sys.stderr)
atexit.register(report)
if sys.argv[1] == "-c":
    sys.argv = sys.argv[2:]
    exec(compile(sys.argv[0], "<bench>", "exec"), {"__name__": "__main__"})
else:
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _run_measured(command: list[str]) -> tuple[float, float, str]:
    """Run `python -m MODULE ARGS` or `python -c CODE ARGS`; return wall seconds, peak RSS (MB), stdout."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    kb = int(done.stderr.rsplit("peak-rss-kb", 1)[1].split()[0])
    return seconds, kb / 1024, done.stdout


def _stream_bytes(path: Path) -> int:
    from jobs.stdf.source import open_stream

    total = 0
    with open_stream(path) as stream:
        while data := stream.read(1 << 24):
            total += len(data)
    return total


def measure_file(path: Path, engines: list[str], workdir: Path) -> dict:
    """Raw stdf-convert parse vs our engines (whole `python -m jobs.stdf convert` command)."""
    mb = _stream_bytes(path) / 1e6
    figures: dict = {"file": path.name, "bytes_on_disk": path.stat().st_size, "stream_mb": round(mb, 1)}
    wall, rss, out = _run_measured(["-c", RAW_PARSE, str(path)])
    parse_seconds = float(out.split()[0])
    figures["stdf_convert_raw"] = {
        "seconds": round(parse_seconds, 3),
        "mb_per_s": round(mb / parse_seconds, 1),
        "peak_rss_mb": round(rss),
        "records": int(out.split()[1]),
    }
    for engine in engines:
        outdir = workdir / f"{path.name}.{engine}"
        command = [
            "jobs.stdf",
            "convert",
            str(path),
            str(outdir),
            "--quiet",
            "--batch-size",
            "0",
            "--compression",
            "zstd",
        ]
        wall, rss, _ = _run_measured([*command, "--engine", engine])
        manifest = json.loads((outdir / "manifest.json").read_text())
        figures[engine] = {
            "seconds_whole_command": round(wall, 3),
            "seconds_in_process": manifest["seconds"],
            "mb_per_s": round(mb / wall, 1),
            "peak_rss_mb": round(rss),
            "parts": manifest["rows"]["parts"],
            "results": manifest["rows"]["results"],
        }
        shutil.rmtree(outdir)
    arrow = figures.get("arrow", {}).get("seconds_whole_command")
    if arrow:
        figures["arrow_vs_raw_parse"] = round(parse_seconds / arrow, 2)
        if "pystdf" in figures:
            figures["arrow_vs_pystdf"] = round(figures["pystdf"]["seconds_whole_command"] / arrow, 1)
    return figures


def bench_wafer(cache: Path) -> Path:
    """One bench-scale simulated wafer file (about 100 MB), simulated once into `cache`."""
    found = sorted((cache / "landing").glob("fab1/*/*.stdf.gz")) if cache.exists() else []
    if not found:
        from jobs.simulation.simulate import main as simulate

        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
            simulate(["--root", str(cache), "--start", "2026-11-02", "--days", "1", "--fabs", "fab1",
                      "--scale", "bench", "--lots", "1", "--wafers", "1", "--quiet"])  # fmt: skip
        found = sorted((cache / "landing").glob("fab1/*/*.stdf.gz"))
    return next(f for f in found if not f.name.startswith("FT_"))


def resized_wafer(source: Path, factor: float, target: Path) -> Path:
    """A valid STDF file whose part records are those of `source` taken `factor` times.

    factor 4 repeats the parts section four times (a bigger wafer); factor 1/8 keeps the first
    eighth of it, cut just before a touchdown's first PIR so that no part is left open.
    """
    if target.exists():
        return target
    import stdf_convert

    marks = stdf_convert.tables(source, ["PIR", "PRR"])
    pir_offsets = marks["PIR"]["byte_offset"].to_numpy()
    first = int(pir_offsets[0])
    last = marks["PRR"]["byte_offset"][-1].as_py() + 4 + marks["PRR"]["rec_len"][-1].as_py()
    data = gzip.decompress(source.read_bytes())
    if factor < 1:
        prr_end = marks["PRR"]["byte_offset"][int(len(marks["PRR"]) * factor)].as_py()
        last = int(pir_offsets[pir_offsets > prr_end][0])
    temporary = target.with_suffix(".tmp")
    with gzip.open(temporary, "wb", compresslevel=1) as out:
        out.write(data[:first])
        for _ in range(max(1, int(factor))):
            out.write(data[first:last])
        out.write(data[last:] if factor >= 1 else b"")
    temporary.rename(target)
    return target


def ingest(args: argparse.Namespace) -> dict:
    cache = Path(args.cache)
    with tqdm(total=6, desc="bench ingest", unit="step", file=sys.stderr, disable=args.quiet) as bar:
        bar.set_postfix_str("simulating the bench wafer")
        wafer = bench_wafer(cache)
        eighth = resized_wafer(wafer, 1 / 8, cache / "bench_wafer_eighth.stdf.gz")
        big = resized_wafer(wafer, 4, cache / "bench_wafer_x4.stdf.gz")
        bar.update()
        files = [(SHARED_STDF / name, ["arrow", "pystdf"]) for name in ("lot2.stdf.gz", "lot3.stdf.gz")]
        files = [f for f in files if f[0].exists()]
        # pystdf would need many minutes for the whole bench wafer: it reads an eighth of it
        files += [(eighth, ["arrow", "pystdf"]), (wafer, ["arrow"]), (big, ["arrow"])]
        results = []
        with tempfile.TemporaryDirectory(prefix="bench-") as work:
            for path, engines in files:
                bar.set_postfix_str(path.name)
                results.append(measure_file(path, engines, Path(work)))
                bar.update()
    by_name = {r["file"]: r for r in results}
    one, four, part = by_name[wafer.name], by_name[big.name], by_name[eighth.name]
    return {
        "benchmark": "ingest",
        "cpu_count": os.cpu_count(),
        "files": results,
        "summary": {
            "arrow_vs_raw_parse_bench_wafer": one["arrow_vs_raw_parse"],
            "arrow_vs_raw_parse_4x_wafer": four["arrow_vs_raw_parse"],
            "arrow_mb_per_s_4x_wafer": four["arrow"]["mb_per_s"],
            "arrow_vs_pystdf_eighth_wafer": part["arrow_vs_pystdf"],
            "arrow_4x_wafer_mb_per_s_vs_pystdf_eighth": round(
                four["arrow"]["mb_per_s"] / part["pystdf"]["mb_per_s"], 1
            ),
            "peak_rss_mb_bench_wafer": one["arrow"]["peak_rss_mb"],
            "peak_rss_mb_4x_wafer": four["arrow"]["peak_rss_mb"],
            "rss_growth_1x_to_4x": round(four["arrow"]["peak_rss_mb"] / one["arrow"]["peak_rss_mb"], 2),
            "goals": "arrow >= 0.8x raw parse and >= 25x pystdf; peak RSS flat from the 1x to the 4x wafer",
        },
    }
