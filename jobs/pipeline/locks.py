"""One writer per task, whatever the scheduler: a lock file per output folder under the data root.

Two commands with `--local-scheduler` over one root (cron fires while an engineer backfills)
each have a scheduler of their own, so nothing but the files tells them that the other is
running a task. Each stage's `run()` therefore holds `{root}/locks/{output folder}.lock`
(fcntl.flock, exclusive) while it works. A second process that reaches the same task waits for
the lock, says so in one log line and in the task's status message, and once it has the lock
finds the output complete and does not run it again. The kernel drops a flock when its process
ends, however it ends, so a SIGKILL never leaves a lock held; the lock files themselves stay
(a few bytes each, naming the last holder).

A `run()` that yields dynamic dependencies (ConvertFile from IngestFab) is suspended by luigi
when they are not complete yet and started again from the top later; the lock is released
before that yield, so a suspended task blocks no one.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import luigi
from luigi.task import flatten

from jobs.pipeline.settings import paths

logger = logging.getLogger("luigi-interface")

# Events for the run history (jobs/ops/history.py): luigi fires none when a task is suspended
# for its dynamic dependencies, nor when one finds its output made by another process.
SUSPENDED = "stdf.suspended"
DONE_ELSEWHERE = "stdf.done_elsewhere"
_held: set[Path] = set()  # the locks this process holds (a flock taken twice by one process blocks)


def lock_file(task: luigi.Task) -> Path:
    """`{root}/locks/{the task's output folder relative to the root}.lock`."""
    root = paths().root_path()
    folder = Path(flatten(task.output())[0].path).parent
    try:
        relative = folder.resolve().relative_to(root.resolve())
    except ValueError:  # an output outside the root: lock it beside its own path
        relative = Path(*folder.resolve().parts[1:])
    return root / "locks" / f"{relative}.lock"


@contextlib.contextmanager
def holding(task: luigi.Task) -> Iterator[bool]:
    """Hold the task's lock for the block, waiting for another process that holds it; yield
    whether the output is complete once the lock is ours (then the caller does not run it)."""
    path = lock_file(task)
    if path in _held:  # a subclass's run() calling super().run(): locked already
        yield False
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            message = f"{task.task_id} is being run by {holder}: waiting for it (lock {path})"
            logger.info(message)
            task.set_status_message(message)
            fcntl.flock(lock, fcntl.LOCK_EX)
        _held.add(path)
        try:
            lock.truncate(0)
            lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            lock.flush()
            complete = task.complete()
            if complete:
                logger.info("%s was completed by another process: not run again", task.task_id)
                task.set_status_message("completed by another process: not run again")
                task.trigger_event(DONE_ELSEWHERE, task)
            yield complete
        finally:
            _held.discard(path)
            fcntl.flock(lock, fcntl.LOCK_UN)


def exclusive(run: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`run` under the task's lock (see the module docstring); a generator `run` stays one."""
    if inspect.isgeneratorfunction(run):

        @functools.wraps(run)
        def run_generator(task: luigi.Task) -> Iterator[Any]:
            return (yield from _locked_generator(task, run))

        return run_generator

    @functools.wraps(run)
    def run_locked(task: luigi.Task) -> Any:
        with holding(task) as complete:
            return None if complete else run(task)

    return run_locked


def _locked_generator(task: luigi.Task, run: Callable[[Any], Iterator[Any]]) -> Iterator[Any]:
    """Drive `run`'s generator under the lock. Dependencies that are complete are handed back
    at once, as luigi does; for ones that are not, luigi abandons the generator and runs the
    task again from the top later, so the lock is released and the run history told first."""
    while True:
        pending = None
        with holding(task) as complete:
            if complete:
                return
            steps, reply = run(task), None
            while pending is None:
                try:
                    requires = steps.send(reply)
                except StopIteration:
                    return
                if all(t.complete() for t in flatten(requires)):
                    reply = yield requires
                else:
                    pending = requires
                    steps.close()
        task.trigger_event(SUSPENDED, task)
        yield pending
        # luigi found them complete after all (finished in between): start again, locked


def install(cls: type) -> None:
    """Put the `run` that `cls` defines itself under the lock (called for every stage class)."""
    if "run" in cls.__dict__ and not getattr(cls.__dict__["run"], "__wrapped__", None):
        cls.run = exclusive(cls.__dict__["run"])
