"""Command line:

python -m jobs.stdf convert FILE OUTDIR [--engine arrow|pystdf]
python -m jobs.stdf inspect FILE      one screen on a refused or flagged file (exit 1: unreadable)
"""

from __future__ import annotations

import argparse
import configparser
import os
import sys
from pathlib import Path

from . import ENGINES, StdfReadError, convert_stdf
from .plausibility import Plausibility
from .scratch import Scratch


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs.stdf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser(
        "convert", help="convert an STDF file (.stdf/.std, .gz, .bz2, .zip) to Parquet tables + manifest.json"
    )
    convert.add_argument("file", type=Path)
    convert.add_argument("outdir", type=Path)
    convert.add_argument(
        "--engine", choices=ENGINES, default=None, help="default: [stdf] engine in luigi.cfg"
    )
    convert.add_argument(
        "--batch-size", type=int, default=None, help="records per Arrow batch (0: chosen per file)"
    )
    convert.add_argument("--compression", default=None, help="Parquet compression (default: luigi.cfg)")
    convert.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    inspect = commands.add_parser(
        "inspect", help="summarize a file: MIR, byte order, records, parts, structure, where reading stopped"
    )
    inspect.add_argument("file", type=Path)
    return parser


def _settings(args: argparse.Namespace) -> tuple[str, int, str]:
    """Command-line values, else luigi.cfg's [stdf] section (read only when one is missing)."""
    if args.engine and args.batch_size is not None and args.compression:
        return args.engine, args.batch_size, args.compression
    cfg = configured()
    return (
        args.engine or cfg.get("engine", "arrow"),
        args.batch_size or int(cfg.get("batch_size", "0")),
        args.compression or cfg.get("compression", "zstd"),
    )


def configured() -> dict[str, str]:
    """luigi.cfg's [stdf] section (LUIGI_CONFIG_PATH, else the repo's file), read without luigi:
    the STDF package knows nothing of the workflows, and luigi takes long to import."""
    path = os.environ.get("LUIGI_CONFIG_PATH") or str(Path(__file__).resolve().parents[2] / "luigi.cfg")
    config = configparser.ConfigParser(interpolation=None)
    config.read(path)
    return dict(config["stdf"]) if config.has_section("stdf") else {}


def _progress_bar(path: Path, quiet: bool):
    """A tqdm bar over the bytes read, on an interactive terminal only."""
    if quiet or not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm

    from .source import compression_of

    total = path.stat().st_size if compression_of(path) == "none" else None
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=path.name, leave=False)

    def update(offset: int) -> None:
        bar.update(max(0, offset - bar.n))

    return bar, update


def plausibility() -> Plausibility:
    """[stdf] max_bytes_without_parts and max_unknown_share, else the defaults."""
    cfg, default = configured(), Plausibility()
    return Plausibility(
        int(cfg.get("max_bytes_without_parts", default.max_bytes_without_parts)),
        float(cfg.get("max_unknown_share", default.max_unknown_share)),
    )


def scratch() -> Scratch:
    """[stdf] scratch_dir and scratch_max_bytes, else the defaults."""
    cfg = configured()
    return Scratch(
        cfg.get("scratch_dir", Scratch.folder), int(cfg.get("scratch_max_bytes", Scratch.max_bytes))
    )


def _failed(path: Path, error: Exception) -> int:
    """One line on stderr for an expected failure (a bad file names its byte offset), exit 1."""
    if isinstance(error, StdfReadError):
        print(f"error: {error}", file=sys.stderr)
    else:
        print(f"error: {path}: {getattr(error, 'strerror', None) or error}", file=sys.stderr)
    return 1


def _inspect(path: Path) -> int:
    from .inspect import inspect

    if not path.is_file():
        print(f"error: {path}: no such file", file=sys.stderr)
        return 1
    try:
        lines, unreadable = inspect(path, plausibility(), scratch())
    except (StdfReadError, OSError) as exc:
        return _failed(path, exc)
    print("\n".join(lines))
    if unreadable:
        print(f"error: {path}: {unreadable}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "inspect":
        return _inspect(args.file)
    engine, batch_size, compression = _settings(args)
    bar, progress = _progress_bar(args.file, args.quiet)
    try:
        manifest = convert_stdf(
            args.file,
            args.outdir,
            engine,
            batch_size,
            compression,
            progress,
            plausibility=plausibility(),
            scratch=scratch(),
        )
    except (StdfReadError, OSError) as exc:
        return _failed(args.file, exc)
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        rows = manifest["rows"]
        note = f", truncated at byte {manifest['file']['truncated_at']}" if manifest["truncated"] else ""
        print(
            f"{args.file}: {rows['parts']} parts, {rows['results']} results, {rows['tests']} tests, "
            f"{rows['bins']} bins in {manifest['seconds']:.2f} s ({engine}){note} -> {args.outdir}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
