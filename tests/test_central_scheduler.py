"""The wafer-yield workflow through a real central scheduler: luigid on 127.0.0.1 (jobs/ops/luigid.py).

A small simulated floor (2 fabs, 2 wafers a fab-day, 3 days); luigid is started for its root on a
free port with `python -m jobs.ops.luigid start` and stopped at the end. The daily chain runs as
the `luigi` command with 2 workers against it; what happened is read back through luigid's
HTTP API, its SQLite task history, our own run history, and the visualizer in headless Chromium.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest

from jobs.ops.history import INVOCATION_ENV, read_runs
from jobs.simulation.simulate import main as simulate
from jobs.wafer_yield import IngestFab
from tests.helpers import REPO, free_port, luigi_settings

FIRST = dt.date(2026, 11, 10)
DAY = FIRST + dt.timedelta(days=1)  # its chain also decides FIRST (the champion comes from there)
FAILING_DAY = FIRST + dt.timedelta(days=2)
CHAIN = {
    *("WaferYieldDaily", "YieldReport", "Score", "Lifecycle", "Deploy", "Train", "Features", "QualityGate"),
    "IngestFab",
    *("FabDayLanded", "ConvertFile"),
}
EXTERNAL = {"FabDayLanded"}  # checked, never run
CHROMIUM = Path("/usr/bin/chromium")
# Headless, quiet (no network of its own), and 1250 px high: the whole graph of a day in one picture.
BROWSER = [
    *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
    *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
    *("--window-size=1600,1250", "--virtual-time-budget=15000"),
]


@dataclass(frozen=True)
class Floor:
    root: Path
    port: int

    def api(self, method: str, **data: Any) -> Any:
        """luigid's JSON-RPC over GET: /api/{method}?data={json}."""
        query = urllib.parse.urlencode({"data": json.dumps(data)})
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/{method}?{query}", timeout=10) as r:
            return json.load(r)["response"]

    def tasks(self, status: str = "") -> dict[str, dict]:
        """Tasks luigid knows, by id (every status when `status` is empty)."""
        return self.api("task_list", status=status, upstream_status="", search="")


def command(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A command as a user types it: the repo's luigi.cfg, and an invocation of its own in the
    run history (not this test process's)."""
    env = {k: v for k, v in os.environ.items() if k != INVOCATION_ENV}
    env["LUIGI_CONFIG_PATH"] = str(REPO / "luigi.cfg")
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def scheduler(action: str, floor: Floor) -> subprocess.CompletedProcess:
    where = ["--port", str(floor.port), "--root", str(floor.root)]
    return command(sys.executable, "-m", "jobs.ops.luigid", action, *where)


def wafer_yield_daily(floor: Floor, day: dt.date, *options: str) -> subprocess.CompletedProcess:
    """The luigi command for a day, 2 workers, through this floor's luigid."""
    task = ["--module", "jobs.wafer_yield", "WaferYieldDaily", "--date", str(day), "--workers", "2"]
    central = ["--scheduler-host", "127.0.0.1", "--scheduler-port", str(floor.port)]
    settings = ["--paths-root", str(floor.root), "--wafer-yield-fabs", "fab1,fab2"]
    small = ["--wafer-yield-min-devices", "1000", "--backoff-settle-seconds", "0"]
    return command(sys.executable, "-m", "luigi", *task, *central, *settings, *small, *options)


def fab_days(tasks: dict[str, dict], family: str) -> list[tuple[str, str]]:
    return sorted((t["params"]["fab"], t["params"]["date"]) for t in tasks.values() if t["name"] == family)


def history_events(database: Path) -> list[tuple[str, str, str]]:
    """(task id, family, event) of every event in luigid's task history."""
    with contextlib.closing(sqlite3.connect(database)) as con:
        query = "SELECT t.task_id, t.name, e.event_name FROM tasks t JOIN task_events e ON e.task_id = t.id"
        return con.execute(query).fetchall()


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Floor]:
    root = tmp_path_factory.mktemp("luigid_floor")
    args = ["--root", str(root), "--start", str(FIRST), "--days", "3", "--fabs", "fab1,fab2"]
    assert simulate([*args, "--lots", "1", "--wafers", "2", "--quiet"]) == 0
    here = Floor(root, free_port())
    try:
        started = scheduler("start", here)
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"http://127.0.0.1:{here.port}/static/visualiser/index.html" in started.stdout
        yield here
    finally:
        stopped = scheduler("stop", here)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


@pytest.fixture(scope="module")
def daily_run(floor: Floor) -> subprocess.CompletedProcess:
    """WaferYieldDaily(DAY) with 2 workers through luigid, once for the module."""
    return wafer_yield_daily(floor, DAY)


def test_status_start_again_and_a_taken_port(floor: Floor) -> None:
    status = scheduler("status", floor)
    assert status.returncode == 0 and "luigid running (pid" in status.stdout
    assert str(floor.root / "luigid" / "task_history.sqlite") in status.stdout
    again = scheduler("start", floor)
    assert again.returncode == 0 and "already running" in again.stdout
    other = Floor(floor.root / "elsewhere", floor.port)  # another root, the same port
    taken = scheduler("start", other)
    assert taken.returncode == 1 and "already in use" in taken.stderr and "Traceback" not in taken.stderr
    assert scheduler("status", other).returncode == 3


def test_the_daily_chain_runs_through_luigid_with_two_workers(
    floor: Floor, daily_run: subprocess.CompletedProcess
) -> None:
    assert daily_run.returncode == 0, daily_run.stderr[-3000:]
    tasks = floor.tasks()
    assert {t["name"] for t in tasks.values()} >= CHAIN
    assert {t["status"] for t in tasks.values()} == {"DONE"}
    assert set(floor.tasks("DONE")) == set(tasks)
    assert floor.tasks("FAILED") == {} and floor.tasks("PENDING") == {}
    both_days = [(fab, str(day)) for fab in ("fab1", "fab2") for day in (FIRST, DAY)]
    assert fab_days(tasks, "FabDayLanded") == fab_days(tasks, "IngestFab") == both_days

    # luigid's own history (SQLAlchemy, [task_history]): every task it knows ended DONE
    events = history_events(floor.root / "luigid" / "task_history.sqlite")
    assert set(tasks) <= {task_id for task_id, _, event in events if event == "DONE"}
    assert {name for _, name, event in events if event == "RUNNING"} == CHAIN - EXTERNAL

    # ours ({root}/history/runs.sqlite): each run of the chain, DONE, from the luigi command's processes
    runs = read_runs(floor.root / "history" / "runs.sqlite")
    runs = runs[runs["task_id"].isin(tasks)]
    assert set(runs["task_id"]) == {i for i, t in tasks.items() if t["name"] not in EXTERNAL}
    assert set(runs["family"]) == CHAIN - EXTERNAL and (runs["status"] == "DONE").all()
    assert runs["invocation"].nunique() == 1  # one luigi command, its worker processes


def test_a_failing_task_fails_the_command_and_luigid_shows_it(floor: Floor) -> None:
    # the day's ingest cannot create its folder: a file is where the folder must go
    with luigi_settings(paths={"root": floor.root}):
        blocker = IngestFab(fab="fab1", date=FAILING_DAY).folder().parent
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the day's ingest folder must go\n")
    failed_run = wafer_yield_daily(floor, FAILING_DAY)
    assert failed_run.returncode == 30, failed_run.stderr[-3000:]  # [retcode] task_failed
    failed = floor.tasks("FAILED")
    assert fab_days(failed, "IngestFab") == [("fab1", str(FAILING_DAY)), ("fab2", str(FAILING_DAY))]
    assert {t["name"] for t in failed.values()} == {"IngestFab"}
    for task_id in failed:
        error = floor.api("fetch_error", task_id=task_id)["error"]
        assert "FileExistsError" in error and str(blocker) in error
    # what depends on it never ran: still waiting in luigid; the days before stay DONE
    waiting = floor.tasks("PENDING").values()
    assert {t["name"] for t in waiting} >= {"QualityGate", "Features", "Score", "WaferYieldDaily"}
    assert {t["params"]["date"] for t in waiting} == {str(FAILING_DAY)}


def test_the_visualizer_shows_the_wafer_yield_graph(
    floor: Floor, daily_run: subprocess.CompletedProcess, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (scripts/test does when it can)")
    assert daily_run.returncode == 0
    (task_id,) = [i for i, t in floor.tasks("DONE").items() if t["name"] == "WaferYieldDaily"]
    graph = floor.api("dep_graph", task_id=task_id)  # the task and everything upstream of it
    visualizer = f"http://127.0.0.1:{floor.port}/static/visualiser/index.html"
    page = f"{visualizer}#tab=graph&taskId={urllib.parse.quote(task_id)}"
    browser = [str(CHROMIUM), *BROWSER, f"--user-data-dir={tmp_path / 'profile'}"]

    # the rendered graph: one node per task of the chain, each drawn DONE
    dom = command(*browser, "--dump-dom", page, timeout=60).stdout
    drawn = re.findall(r'data-task-status="(\w+)" data-task-id="([^"]+)"', dom)
    nodes = {task: status for status, task in drawn}
    assert set(nodes) == set(graph) and set(nodes.values()) == {"DONE"}
    assert set(re.findall(r'<text y="3">(\w+)</text>', dom)) == CHAIN

    screenshot = tmp_path / "wafer_yield_graph.png"
    command(*browser, f"--screenshot={screenshot}", page, timeout=60)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[:2] == (1250, 1600) and pixels.std() > 0.01  # not one flat colour
    print(f"screenshot: {screenshot}")
