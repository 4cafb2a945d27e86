"""Files and folders that appear whole or not at all, with the mode a plain write would give.

The one place where the suite writes atomically: a temporary sibling (hidden, `.NAME.tmp-*`),
flushed, given the umask's mode (mkstemp and mkdtemp create private 0600/0700 entries), then
renamed over the target. Every layer uses it; it imports nothing of the suite. A killed writer
leaves its hidden temporary behind; `sweep` removes those nobody is writing any more.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

TEMP_MARK = ".tmp-"  # every temporary name holds it: `.{name}.tmp-*`
_umask_lock = threading.Lock()


def umask() -> int:
    """The process's umask (reading it means setting it: done under a lock, restored at once)."""
    with _umask_lock:
        current = os.umask(0o022)
        os.umask(current)
    return current


def file_mode() -> int:
    return 0o666 & ~umask()


def folder_mode() -> int:
    return 0o777 & ~umask()


def temp_sibling(target: Path) -> Path:
    """A hidden name beside `target` that no other process or thread uses."""
    return target.with_name(f".{target.name}{TEMP_MARK}{os.getpid()}-{threading.get_ident()}")


@contextlib.contextmanager
def atomic_path(target: Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `target` to write to; at the end it gets the umask's mode
    and is renamed to `target` (flushed to disk first if `durable`: models and registry
    pointers must survive a power cut). On an error nothing appears and the temporary goes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temp_sibling(target)
    try:
        yield temporary
        if durable:
            with open(temporary, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(temporary, file_mode())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes, durable: bool = False) -> Path:
    with atomic_path(path, durable) as temporary:
        temporary.write_bytes(data)
    return path


def json_text(data: Any, sort_keys: bool = False) -> str:
    """Strict JSON, indented: NaN and infinities (which strict parsers refuse) become null."""
    return json.dumps(_finite(data), indent=2, default=str, sort_keys=sort_keys, allow_nan=False) + "\n"


def json_line(data: Any, sort_keys: bool = False) -> str:
    """One strict JSON line (for .jsonl logs): NaN and infinities become null."""
    return json.dumps(_finite(data), default=str, sort_keys=sort_keys, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, data: Any, sort_keys: bool = False, durable: bool = False) -> Path:
    return write_bytes(path, json_text(data, sort_keys).encode("utf-8"), durable)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield an empty work folder beside `target`, renamed to `target` when the block ends.

    A run killed inside the block leaves only a hidden `.{name}.tmp-*` folder, never a partial
    `target`; the rerun starts over (and `sweep` removes the leftover once it is old)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}{TEMP_MARK}{os.getpid()}-", dir=target.parent))
    try:
        yield work
        os.chmod(work, folder_mode())
        replace_dir(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def replace_dir(new: Path, target: Path) -> None:
    """Move the finished folder `new` to `target`, replacing an existing one: a reader sees the
    old folder, then for an instant none, then the new one; never a half-written folder."""
    if target.exists():
        old = target.with_name(f".{target.name}.old{TEMP_MARK}{os.getpid()}")
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)


def grant_group_read(path: Path, top: Path) -> None:
    """Let the group read `path` (for a folder: all in it) and enter the folders from below `top`
    down to it, whatever the umask: for files another service of the group reads (models)."""
    path, top = Path(path), Path(top)
    for folder in [top / p for p in reversed(path.relative_to(top).parents) if p != Path(".")]:
        _add_mode(folder, 0o050)
    _add_mode(path, 0o050 if path.is_dir() else 0o040)
    for folder, dirs, names in os.walk(path):
        for name in dirs:
            _add_mode(Path(folder, name), 0o050)
        for name in names:
            _add_mode(Path(folder, name), 0o040)


def _add_mode(path: Path, bits: int) -> None:
    os.chmod(path, os.stat(path).st_mode & 0o7777 | bits)


# --- leftovers of killed writers ---------------------------------------------------------------

# Hidden temporaries: `.NAME.tmp-PID-…` (temp_sibling, staged_folder), `.NAME.old.tmp-PID`
# (replace_dir), and the names older versions used: `.NAME.old-*`, `.NAME.XXXX.tmp`, `.NAME.tmp`.
_LEFTOVER = re.compile(rf"^\..+({re.escape(TEMP_MARK)}|\.old-|\.tmp$)")
_WRITER_PID = re.compile(rf"{re.escape(TEMP_MARK)}(\d+)(?:-|$)")
# Files that mark a published folder: written inside a staged folder, so nothing below is temporary.
PUBLISHED_MARKERS = ("manifest.json", "_manifest.json")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (one we may not signal runs too)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a number no pid can be
        return False
    except PermissionError:
        return True
    return True


def is_leftover(name: str) -> bool:
    return bool(_LEFTOVER.match(name))


def _newest_mtime(path: Path) -> float:
    """The newest modification time of `path` and, for a folder, of everything in it (a live
    writer adds and grows files inside; the folder's own time only changes with its listing)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for folder, _, names in os.walk(path):
            for name in names:
                with contextlib.suppress(FileNotFoundError):
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
            with contextlib.suppress(FileNotFoundError):
                newest = max(newest, os.lstat(folder).st_mtime)
    return newest


def abandoned(path: Path, max_age_seconds: float, now: float | None = None) -> bool:
    """A leftover nobody is writing: untouched for `max_age_seconds` and, where its name holds its
    writer's pid, that process is gone (a live one may write slowly; another host's only ages)."""
    pid = _WRITER_PID.search(path.name)
    if pid and pid_alive(int(pid.group(1))):
        return False
    try:
        return (time.time() if now is None else now) - _newest_mtime(path) >= max_age_seconds
    except FileNotFoundError:  # its writer finished (renamed it) or another sweep took it
        return False


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    return True


def remove_leftovers(folder: Path, max_age_seconds: float, prefix: str = ".") -> list[Path]:
    """Remove the abandoned leftovers directly in `folder` whose names start with `prefix`."""
    try:
        names = [e.name for e in os.scandir(folder)]
    except FileNotFoundError:
        return []
    return _remove_abandoned(
        folder, [n for n in names if n.startswith(prefix) and is_leftover(n)], max_age_seconds
    )


def _remove_abandoned(folder: Path, names: list[str], max_age_seconds: float) -> list[Path]:
    now = time.time()
    found = [Path(folder, name) for name in names]
    return [p for p in found if abandoned(p, max_age_seconds, now) and _remove(p)]


def sweep(top: Path, max_age_seconds: float, skip: Collection[str] = ()) -> list[Path]:
    """Remove every abandoned leftover below `top` (see `abandoned`); returns what went.

    Cheap enough for every command: one listing of each folder, and published folders (holding
    a manifest) are not entered, as nothing inside them is temporary; nor are the folders named
    in `skip` directly below `top`."""
    removed: list[Path] = []
    seen: set[tuple[int, int]] = set()
    todo = [str(top)]
    while todo:
        folder = todo.pop()
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen:  # a symlink loop
                continue
            seen.add((info.st_dev, info.st_ino))
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        leftovers = [e.name for e in entries if e.name.startswith(".") and is_leftover(e.name)]
        removed += _remove_abandoned(Path(folder), leftovers, max_age_seconds)
        for entry in entries:
            if entry.name in leftovers or (folder == str(top) and entry.name in skip) or not entry.is_dir():
                continue
            if not any(os.path.exists(os.path.join(entry.path, m)) for m in PUBLISHED_MARKERS):
                todo.append(entry.path)
    return removed
