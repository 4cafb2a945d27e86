"""Transient failures are retried inside the task, with exponential backoff and jitter (tenacity).

Transient: the landing share does not answer (timeouts, stale NFS handles, I/O errors) or a
landed file is still being written (modified less than `[backoff] settle_seconds` ago). These
are retried `attempts` times, waiting initial_seconds, 2x, 4x ... (at most max_seconds) plus up
to jitter_seconds at random, so that workers hitting the same share do not retry in step.
When the attempts are used up the task fails, and luigid's `[scheduler] retry_delay` and
`retry_count` bound what happens next: the outer retry.

Permanent failures are never retried here: a file that cannot be read as STDF gets an
`unreadable` verdict and is quarantined, a missing file is a missing file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import tenacity

from jobs.pipeline.settings import backoff
from jobs.stdf.source import share_failure

logger = logging.getLogger("luigi-interface")
T = TypeVar("T")


class TransientError(Exception):
    """Worth retrying: the same operation may succeed in a moment."""


class StillBeingWrittenError(TransientError):
    def __init__(self, path: Path, age: float) -> None:
        super().__init__(f"{path}: still being written (modified {age:.1f} s ago)")
        self.path = path


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TransientError) or share_failure(error)


def retrying(what: str, on_retry: Callable[[str], None] | None = None) -> tenacity.Retrying:
    """A tenacity controller for `what` (named in the log), configured by `[backoff]`.
    `on_retry(message)` sees each retry (tasks pass their `set_status_message`)."""
    settings = backoff()

    def before_sleep(state: tenacity.RetryCallState) -> None:
        message = (
            f"{what}: {state.outcome.exception()}; attempt {state.attempt_number} of {settings.attempts}, "
            f"next in {state.next_action.sleep:.2f} s"
        )
        logger.warning(message)
        if on_retry:
            on_retry(message)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        wait=tenacity.wait_exponential(multiplier=settings.initial_seconds, max=settings.max_seconds)
        + tenacity.wait_random(0, settings.jitter_seconds),
        stop=tenacity.stop_after_attempt(settings.attempts),
        before_sleep=before_sleep,
        reraise=True,  # the last error itself, not tenacity's RetryError, reaches luigi
    )


def with_retries(what: str, fn: Callable[[], T], on_retry: Callable[[str], None] | None = None) -> T:
    return retrying(what, on_retry)(fn)


def check_settled(path: Path, now: float | None = None) -> None:
    """Raise StillBeingWrittenError when `path` was modified within `[backoff] settle_seconds`.

    A tester writing a file in place keeps touching it; a file copied in whole is older. An
    mtime ahead of our clock (a tester clock running fast) counts as settled: waiting would not
    make it older."""
    try:
        age = (time.time() if now is None else now) - Path(path).stat().st_mtime
    except FileNotFoundError:
        return  # set aside meanwhile: the reader says so
    if 0 <= age < backoff().settle_seconds:
        raise StillBeingWrittenError(Path(path), age)
