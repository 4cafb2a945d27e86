"""Reliability under concurrency and scheduler restarts, with real commands on a small floor.

One fab, 3 days, 2 wafers a day (jobs/simulation/simulate.py). Two `--local-scheduler` luigi
commands over overlapping RangeDaily ranges share the root through the task locks
(jobs/pipeline/locks.py); a scheduled run (jobs/ops/schedules.py) through luigid survives
luigid being SIGKILLed and restarted under it. What happened is read back from the run
history ({root}/history/runs.sqlite), the manifests and the model registry.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.domain import registry
from jobs.ops.history import INVOCATION_ENV
from jobs.ops.luigid import server_args
from jobs.pipeline import locks
from jobs.simulation.simulate import main as simulate
from jobs.wafer_yield import Deploy, Lifecycle, WaferYieldDaily, store
from tests.helpers import REPO, assert_each_task_ran_once, free_port, luigi_settings, runs

FIRST = dt.date(2026, 11, 10)
DAYS = [FIRST + dt.timedelta(days=i) for i in range(3)]
NIGHT = dt.datetime(2026, 11, 13, 2, tzinfo=dt.UTC)  # the nightly run after the last day


@pytest.fixture()
def site(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The floor, and the environment of a command on it (the site's luigi.cfg over the repo's,
    an invocation of its own in the run history, a luigid port nothing else uses)."""
    root = tmp_path / "data"
    args = ["--root", str(root), "--start", str(FIRST), "--days", "3", "--fabs", "fab1", "--lots", "1"]
    assert simulate([*args, "--wafers", "2", "--quiet"]) == 0
    site_cfg = tmp_path / "site.cfg"
    site_cfg.write_text(
        f"[paths]\nroot = {root}\n[wafer_yield]\nfabs = fab1\nmin_devices = 1000\n"
        "[backoff]\nsettle_seconds = 0\n"
        f"[schedule]\nwafer_yield_days = 3\n[sla]\nworkflows = wafer_yield\n[models]\nauto_approve = true\n"
        # a worker that lost luigid asks again every second (luigi's default: 30 s)
        f"[core]\ndefault_scheduler_port = {free_port()}\nrpc-retry-wait = 1\n"
    )
    env = {k: v for k, v in os.environ.items() if k != INVOCATION_ENV}
    return root, {**env, "LUIGI_CONFIG_PATH": str(site_cfg)}


def assert_registry_consistent(root: Path) -> None:
    """One version per trained model, every version's file matching its recorded sha256, no
    change left half-done, and the aliases showing the newest day's plan."""
    with luigi_settings(paths={"root": root}, wafer_yield={"fabs": "fab1"}):
        with registry.locked(store()):
            assert registry.PENDING not in store().client().get_registered_model(store().model_name).tags
        versions = registry.versions(store())
        hashes = [v["tags"][registry.SHA256] for v in versions]
        assert versions and len(hashes) == len(set(hashes)), hashes
        for record in versions:
            registry.load(store(), record["version"], root / "scratch")  # raises on a mismatch
        numbers = [Deploy(date=d).manifest()["version"] for d in DAYS]
        assert [n for n in numbers if n is not None] == [v["version"] for v in versions]
        plan = Lifecycle(date=DAYS[-1]).manifest()
        assert registry.aliases(store()).get(registry.CHAMPION) == plan["champion"]


def range_command(start: dt.date, stop: dt.date) -> list[str]:
    dates = ["--start", str(start), "--stop", str(stop), "--now", str(int(NIGHT.timestamp()))]
    return [sys.executable, "-m", "luigi", "--module", "jobs.wafer_yield", "RangeDaily", "--of",
            "WaferYieldDaily", *dates, "--workers", "2", "--local-scheduler"]  # fmt: skip


def test_two_local_scheduler_commands_run_each_task_once(site: tuple[Path, dict[str, str]]) -> None:
    root, env = site
    # cron's nightly range and an engineer's backfill of the last two days, at the same time
    stop = DAYS[-1] + dt.timedelta(days=1)
    commands = [range_command(DAYS[0], stop), range_command(DAYS[1], stop)]
    started = [
        subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    outputs = [process.communicate(timeout=300) for process in started]
    assert [p.returncode for p in started] == [0, 0], [err[-2000:] for _, err in outputs]
    logs = "".join(err for _, err in outputs)
    rows = assert_each_task_ran_once(root)
    # they met: tasks one command found running in the other, waited for and did not redo
    skipped = [r for r in rows if r["status"] == "SKIPPED"]
    assert skipped and "waiting for it" in logs and "was completed by another process: not run again" in logs
    assert len({r["invocation"] for r in rows}) == 2
    assert_registry_consistent(root)
    with luigi_settings(paths={"root": root}, wafer_yield={"fabs": "fab1"}):
        assert all(WaferYieldDaily(date=d).complete() for d in DAYS)


def test_a_scheduled_run_finishes_its_range_when_luigid_is_killed_under_it(
    site: tuple[Path, dict[str, str]],
) -> None:
    root, env = site
    port = next(line.split("= ")[1] for line in Path(env["LUIGI_CONFIG_PATH"]).read_text().splitlines()
                if line.startswith("default_scheduler_port"))  # fmt: skip
    luigid = [sys.executable, "-m", "jobs.ops.luigid", "--port", port, "--root", str(root)]

    def scheduler(action: str) -> None:
        done = subprocess.run([*luigid, action], cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr

    scheduler("start")
    try:
        command = [sys.executable, "-m", "jobs.ops.schedules", "run", "wafer-yield", "--now", str(NIGHT)]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        backfill = subprocess.Popen(command, cwd=REPO, env=env, **pipes)
        deadline = time.monotonic() + 120
        while not any(r["family"] == "Features" for r in runs(root)):
            assert backfill.poll() is None and time.monotonic() < deadline, "it ended before the kill"
            time.sleep(0.2)
        pid = int((root / "luigid" / "luigid.pid").read_text())
        os.kill(pid, signal.SIGKILL)  # mid-backfill
        while server_args(pid) is not None:  # gone (a zombie until init reaps it counts as gone)
            time.sleep(0.05)
        scheduler("start")  # luigid's state file is from before the backfill: it knows none of its tasks
        out, err = backfill.communicate(timeout=300)
    finally:
        scheduler("stop")
    assert backfill.returncode == 0, err[-3000:]
    assert "period(s) left: running the range again (2 of 3)" in out  # the first command ended with work left
    assert_each_task_ran_once(root)
    with luigi_settings(paths={"root": root}, wafer_yield={"fabs": "fab1"}):
        assert all(WaferYieldDaily(date=d).complete() for d in DAYS)


def test_a_killed_holder_leaves_no_lock_held(tmp_path: Path) -> None:
    with luigi_settings(paths={"root": tmp_path}, wafer_yield={"fabs": "fab1"}):
        task = WaferYieldDaily(date=FIRST)
        path = locks.lock_file(task)
    assert path == tmp_path / "locks" / "wafer_yield_daily" / task.version_tag() / f"date={FIRST}.lock"
    path.parent.mkdir(parents=True)
    hold = f"import fcntl, time; f = open({str(path)!r}, 'a'); fcntl.flock(f, fcntl.LOCK_EX)"
    hold += "; print(1, flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "1\n"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with open(path) as probe:  # free at once: the kernel dropped the killed holder's lock
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(probe, fcntl.LOCK_UN)
    with (
        luigi_settings(paths={"root": tmp_path}, wafer_yield={"fabs": "fab1"}),
        locks.holding(WaferYieldDaily(date=FIRST)) as complete,
    ):
        assert complete is False
    assert path.read_text().startswith(f"pid {os.getpid()} ")
