"""Files set aside: moved out of the landing zone with a reason, never deleted, released when fixed.

    quarantine_file(path, workflow, fab, date, reason)  move a landed file aside, reason beside it
    held()                                              what is held, with the reasons
    release(name)                                       put a file back where it landed

Command line (scripts/quarantine):

    scripts/quarantine list               every held file: where it came from, when and why
    scripts/quarantine release FILE       put FILE (a held file's name or path) back in the landing
                                          zone; its time becomes now, so the next quality-monitor
                                          window checks it again
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from jobs.files import atomic_path, read_json, write_json
from jobs.pipeline.parameters import inside_root
from jobs.pipeline.settings import paths

REASON_SUFFIX = ".reason.json"


def quarantine_root() -> Path:
    return paths().root_path() / "quarantine"


def quarantine_file(path: Path, workflow: str, fab: str, date: dt.date, reason: dict[str, Any]) -> Path:
    """Move a landed file to `{root}/quarantine/{workflow}/{fab}/{date}/` with `NAME.reason.json`
    beside it. The reason is written first and the move is a rename: a kill leaves the file either
    in the landing zone (and the rerun quarantines it) or whole in quarantine."""
    folder = inside_root(quarantine_root() / workflow / fab / f"{date:%Y-%m-%d}")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    held_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    write_json(folder / f"{path.name}{REASON_SUFFIX}", {**reason, "from": str(path), "held_at": held_at})
    _move(path, target)
    return target


def _move(source: Path, target: Path) -> None:
    try:
        os.rename(source, target)
    except OSError:  # another filesystem: copy whole under a hidden name, then swap in
        with atomic_path(target) as temporary:
            shutil.copy2(source, temporary)
        source.unlink()


def held() -> list[dict[str, Any]]:
    """Every held file with its reason (workflow, file, from, held_at, and the failed checks)."""
    found = []
    for reason_file in sorted(quarantine_root().glob(f"*/*/*/*{REASON_SUFFIX}")):
        held_file = reason_file.with_name(reason_file.name.removesuffix(REASON_SUFFIX))
        if held_file.exists():
            found.append({"file": str(held_file), **read_json(reason_file)})
    return found


class ReleaseError(Exception):
    pass


def release(name: str) -> Path:
    """Put a held file back where it landed, its time set to now (a re-upload: the next window
    checks it again). The reason moves to `quarantine/released/` with the release time."""
    given = Path(name).resolve()  # a name, or a path to the held file (relative or not)
    matches = [h for h in held() if name == Path(h["file"]).name or given == Path(h["file"]).resolve()]
    if not matches:
        raise ReleaseError(f"{name}: no such file in quarantine (see scripts/quarantine list)")
    if len(matches) > 1:
        raise ReleaseError(f"{name}: {len(matches)} held files have this name; give the full path")
    entry, held_file = matches[0], Path(matches[0]["file"])
    origin = Path(entry["from"])
    if origin.exists():
        raise ReleaseError(f"{name}: {origin} exists again; not overwriting it")
    origin.parent.mkdir(parents=True, exist_ok=True)
    _move(held_file, origin)
    now = time.time()
    os.utime(origin, (now, now))
    reason_file = held_file.with_name(held_file.name + REASON_SUFFIX)
    released = quarantine_root() / "released" / reason_file.relative_to(quarantine_root())
    write_json(
        released,
        {**read_json(reason_file), "released_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
    )
    reason_file.unlink()
    return origin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/quarantine", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", help="data root (default: [paths] root in luigi.cfg)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="show what is held and why")
    release_parser = commands.add_parser("release", help="put a fixed file back in the landing zone")
    release_parser.add_argument("file")
    args = parser.parse_args(argv)
    if args.root:
        import luigi.configuration

        luigi.configuration.get_config().set("paths", "root", str(Path(args.root).resolve()))
    if args.command == "list":
        entries = held()
        for entry in entries:
            checks = entry.get("checks", [])
            why = entry.get("error") or "; ".join(f"{c['name']}: {c['message']}" for c in checks)
            print(f"{entry['file']}\n    from {entry['from']}, held {entry['held_at']}: {why}")
        print(f"{len(entries)} file(s) held under {quarantine_root()}")
        return 0
    try:
        origin = release(args.file)
    except ReleaseError as error:
        print(f"scripts/quarantine: {error}", file=sys.stderr)
        return 1
    print(f"released {origin}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
