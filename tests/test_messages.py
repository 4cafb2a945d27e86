"""What the commands tell their user: a run waiting for a late fab says for what and until when,
`scripts/schedule run` takes its options in any order and names luigid's address, benchmarks print
only JSON on stdout."""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.fab_merge import FabHourDelivered
from jobs.ops import schedules
from jobs.pipeline import landing
from jobs.simulation.bench import only_json_on_stdout
from jobs.wafer_yield import FabDayLanded
from tests.helpers import free_port, luigi_settings


def test_a_run_waiting_for_a_late_fab_says_so_every_few_minutes(tmp_path: Path, caplog) -> None:
    soon = dt.datetime.now(dt.UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    day = soon.date()
    with luigi_settings(paths={"root": tmp_path}), caplog.at_level(logging.INFO, logger="luigi-interface"):
        hour, landed = FabHourDelivered(fab="fab2", hour=soon), FabDayLanded(fab="fab2", date=day)
        assert not hour.complete() and not landed.complete()
        assert not hour.complete() and not landed.complete()  # re-checked at once: not said again
    waiting = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for")]
    assert len(waiting) == 2
    deadline = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(4))  # [wafer_yield] 4 h
    until = f"until {deadline:%Y-%m-%d %H:%M} UTC; then the day goes on without fab2"
    assert waiting[1] == f"waiting for fab2's {day} (_READY in {tmp_path}/landing/fab2/{day}) {until}"
    assert f"waiting for fab2's hour {soon:%Y-%m-%d %H}:00 until " in waiting[0]
    assert waiting[0].endswith("then the hour is merged without fab2")
    assert landing.WAIT_NOTE_SECONDS < 300  # every re-check of a waiting run ([scheduler] retry_delay)


def test_schedule_run_takes_options_in_any_order_and_another_luigid(tmp_path: Path, monkeypatch) -> None:
    called = []
    monkeypatch.setattr(schedules, "run", lambda *args: called.append(args) or 0)
    port = free_port()
    with luigi_settings(paths={"root": tmp_path}):
        argv = [
            "run",
            "--now",
            "2026-11-21T03:00",
            "wafer-yield",
            "--workers",
            "4",
            "--scheduler-port",
            str(port),
        ]
        assert schedules.main(argv) == 0
        assert schedules.main(["run", "fab-merge", "--local-scheduler", "--", "--workers", "3"]) == 0
    (name, now, local, luigi_args), second = called
    assert (name, now, local) == ("wafer-yield", dt.datetime(2026, 11, 21, 3, tzinfo=dt.UTC), False)
    assert luigi_args == ["--scheduler-port", str(port), "--workers", "4"]
    assert second[2:] == (True, ["--workers", "3"])
    shown = schedules.shown(["-m", "luigi", "RangeDaily", "--now", "1763694000"])
    assert shown == "luigi RangeDaily --now 2025-11-21T03:00Z"


def test_schedule_run_names_the_luigid_it_could_not_reach(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "site.cfg"
    config.write_text(f"[paths]\nroot = {tmp_path}\n")
    command = [
        sys.executable,
        "-m",
        "jobs.ops.schedules",
        "run",
        "quality-monitor",
        "--scheduler-port",
        str(port),
    ]
    env = {"PATH": "/usr/bin:/bin", "LUIGI_CONFIG_PATH": str(config)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=Path(schedules.REPO))
    assert done.returncode == 35
    assert done.stderr.splitlines() == [
        f"schedule quality-monitor: luigid is not answering at http://127.0.0.1:{port} (scripts/luigid start)"
    ]


def test_benchmarks_print_only_json_on_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    def noisy(_args: object) -> dict:
        print("simulating the bench floor ...")
        subprocess.run([sys.executable, "-c", "print('a child process talks too')"], check=True)
        return {"mb_per_second": 1.5}

    figures = only_json_on_stdout(noisy, None)
    out, err = capfd.readouterr()
    assert out == "" and "simulating the bench floor" in err and "a child process talks too" in err
    assert figures == {"mb_per_second": 1.5} and json.loads(json.dumps(figures)) == figures
