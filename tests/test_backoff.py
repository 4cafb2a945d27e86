"""Transient failures retried with exponential backoff and jitter; permanent ones never."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import threading
import time
from pathlib import Path

import luigi
import pytest

import jobs.pipeline.backoff
import jobs.stdf.source
from jobs.pipeline.backoff import StillBeingWrittenError, retrying, with_retries
from jobs.pipeline.convert import ConvertFile
from jobs.pipeline.landing import landed_files
from jobs.simulation.simulate import main as simulate
from jobs.stdf import StdfReadError
from tests.helpers import luigi_settings

FAST = {"initial_seconds": 0.05, "jitter_seconds": 0.02, "max_seconds": 10, "attempts": 6}


class Flaky:
    """Fails `failures` times with `error`, then returns 42; notes when it was called."""

    def __init__(self, failures: int, error: BaseException) -> None:
        self.failures, self.error, self.calls = failures, error, []

    def __call__(self) -> int:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            raise self.error
        return 42


def planned_waits(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [float(m) for m in re.findall(r"next in ([0-9.]+) s", caplog.text)]


def test_a_share_that_does_not_answer_is_retried_with_growing_delays(caplog) -> None:
    flaky = Flaky(4, TimeoutError(errno.ETIMEDOUT, "landing share timed out"))
    with luigi_settings(backoff=FAST), caplog.at_level(logging.WARNING, "luigi-interface"):
        assert with_retries("listing the share", flaky) == 42
    waits = planned_waits(caplog)
    assert len(flaky.calls) == 5 and len(waits) == 4
    # exponential: 0.05, 0.1, 0.2, 0.4 s, each plus up to 0.02 s of jitter
    for n, wait in enumerate(waits):
        assert 0.05 * 2**n <= wait <= 0.05 * 2**n + 0.02
    assert waits == sorted(waits) and len(set(waits)) == 4
    gaps = [b - a for a, b in zip(flaky.calls, flaky.calls[1:], strict=False)]
    assert all(gap >= wait - 0.005 for gap, wait in zip(gaps, waits, strict=True))


def test_jitter_spreads_the_waits_of_workers_retrying_together() -> None:
    with luigi_settings(backoff={**FAST, "jitter_seconds": 1.0}):
        controllers = [retrying("x") for _ in range(20)]
    first_waits = set()
    for controller in controllers:
        state = type("State", (), {"attempt_number": 1})()
        first_waits.add(round(controller.wait(state), 6))
    assert len(first_waits) > 15 and all(0.05 <= w <= 1.05 for w in first_waits)


@pytest.mark.parametrize(
    "error",
    [
        StdfReadError("lot.stdf", "corrupt: record chain broken", 1234),
        FileNotFoundError(errno.ENOENT, "gone"),
        PermissionError(errno.EACCES, "denied"),
        ValueError("a bug"),
    ],
)
def test_permanent_failures_are_never_retried(error: BaseException, caplog) -> None:
    flaky = Flaky(1, error)
    with luigi_settings(backoff=FAST), caplog.at_level(logging.WARNING), pytest.raises(type(error)):
        with_retries("converting", flaky)
    assert len(flaky.calls) == 1 and not planned_waits(caplog)


def test_retries_are_bounded_and_the_last_error_reaches_the_task() -> None:
    flaky = Flaky(99, OSError(errno.ESTALE, "stale file handle"))
    with luigi_settings(backoff={**FAST, "attempts": 3}), pytest.raises(OSError, match="stale"):
        with_retries("converting", flaky)
    assert len(flaky.calls) == 3


@pytest.fixture()
def floor(tmp_path: Path):
    args = ["--root", str(tmp_path), "--start", "2026-11-18", "--days", "1", "--fabs", "fab1"]
    assert simulate([*args, "--lots", "1", "--wafers", "1", "--quiet"]) == 0
    with luigi_settings(paths={"root": tmp_path}, backoff={**FAST, "attempts": 9, "settle_seconds": 0.6}):
        yield tmp_path


def converted(task: ConvertFile) -> dict:
    assert luigi.build([task], local_scheduler=True, workers=1, log_level="WARNING")
    return json.loads(Path(task.output().path).read_text())


def test_a_file_still_being_written_is_converted_once_it_settles(floor: Path, tmp_path: Path, caplog) -> None:
    """A tester writes in place: half the file now, the rest a moment later. Read at once, it
    would look truncated (and be quarantined); waiting for it to settle reads it whole."""
    (source,) = landed_files(floor / "landing" / "fab1" / "2026-11-18")
    whole = source.read_bytes()
    landing = tmp_path / "share" / source.name
    landing.parent.mkdir()
    landing.write_bytes(whole[: len(whole) // 2])

    def finish_writing() -> None:
        time.sleep(0.3)
        with open(landing, "ab") as f:
            f.write(whole[len(whole) // 2 :])

    writer = threading.Thread(target=finish_writing)
    with caplog.at_level(logging.WARNING, "luigi-interface"):
        writer.start()
        manifest = converted(ConvertFile(path=str(landing)))
    writer.join()
    assert manifest["status"] == "ok" and not manifest["truncated"]
    assert manifest["input"]["bytes"] == len(whole)
    assert "still being written" in caplog.text
    waits = planned_waits(caplog)
    assert waits and waits == sorted(waits)
    assert manifest["rows"] == converted(ConvertFile(path=str(source)))["rows"]


def test_a_share_error_while_reading_is_retried_not_a_verdict(floor: Path, monkeypatch, caplog) -> None:
    (source,) = landed_files(floor / "landing" / "fab1" / "2026-11-18")
    os.utime(source, (time.time() - 3600, time.time() - 3600))
    real_open, failures = jobs.stdf.source.open_stream, []

    def share_hiccup(path, *args, **kwargs):
        if len(failures) < 2:
            failures.append(path)
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(jobs.stdf.source, "open_stream", share_hiccup)
    with caplog.at_level(logging.WARNING, "luigi-interface"):
        manifest = converted(ConvertFile(path=str(source)))
    assert manifest["status"] == "ok" and len(failures) == 2
    assert len(planned_waits(caplog)) == 2 and "Input/output error" in caplog.text


def test_check_settled_ignores_clocks_running_ahead(tmp_path: Path) -> None:
    path = tmp_path / "f.stdf"
    path.write_bytes(b"x")
    with luigi_settings(backoff={"settle_seconds": 30}):
        with pytest.raises(StillBeingWrittenError):
            jobs.pipeline.backoff.check_settled(path)
        future = time.time() + 3600
        os.utime(path, (future, future))
        jobs.pipeline.backoff.check_settled(path)  # ahead of our clock: waiting would not help
