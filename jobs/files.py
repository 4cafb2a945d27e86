"""Files and folders that appear whole or not at all, with the mode a plain write would give.

The one place where the suite writes atomically: a temporary sibling (hidden, `.NAME.tmp-*`),
flushed, given the umask's mode (mkstemp and mkdtemp create private 0600/0700 entries), then
renamed over the target. Every layer uses it; it imports nothing of the suite.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
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
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}{TEMP_MARK}", dir=target.parent))
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
