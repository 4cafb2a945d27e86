"""More than one machine: two worker hosts (scripts/worker, jobs/ops/workers.py) against one luigid
and one data root.

Each "host" is a separate checkout of the repo (its tracked files copied into a folder of its
own) whose commands import the suite from that folder. Both run the wafer-yield schedule's
RangeDaily (1 fab, 3 days) at the same time, one luigi worker each; then every task has run
exactly once (our run history and luigid's task history), and the outputs equal a single-worker
run over a copy of the same floor.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

from jobs.ops.history import INVOCATION_ENV
from jobs.simulation.simulate import main as simulate
from tests.helpers import REPO, assert_each_task_ran_once, free_port

NIGHT = "2026-11-13T02:00"  # the nightly run after the floor's last day
# the site's settings over each checkout's own luigi.cfg (luigi reads ./luigi.cfg, then this)
SITE_CFG = """[wafer_yield]
fabs = fab1
min_devices = 1000
[backoff]
settle_seconds = 0
[schedule]
wafer_yield_days = 3
[sla]
workflows = wafer_yield
[models]
auto_approve = true
"""


def checkout(folder: Path) -> Path:
    """A copy of the repo's files (tracked, and new ones not ignored), as another host has."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout  # fmt: skip
    for name in filter(None, listed.decode().split("\0")):
        if (REPO / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, folder / name)
    return folder


def host_env(repo: Path, site_cfg: Path) -> dict[str, str]:
    """A command on a host: the suite from its own checkout, an invocation of its own."""
    env = {k: v for k, v in os.environ.items() if k != INVOCATION_ENV}
    return {**env, "PYTHONPATH": str(repo), "LUIGI_CONFIG_PATH": str(site_cfg)}


def worker(repo: Path, site_cfg: Path, root: Path, port: int) -> subprocess.Popen:
    """`scripts/worker run wafer-yield --workers 1` on a host; luigi's one-command-per-host pid lock
    in a folder of the host's own (as on a machine of its own: /tmp/luigi)."""
    command = [sys.executable, "-m", "jobs.ops.workers", "run", "wafer-yield", "--workers", "1",
               "--scheduler-host", "127.0.0.1", "--scheduler-port", str(port), "--root", str(root),
               "--now", NIGHT, "--lock-pid-dir", str(repo / "luigi-pids")]  # fmt: skip
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    return subprocess.Popen(command, cwd=repo, env=host_env(repo, site_cfg), **pipes)


def luigid(action: str, root: Path, port: int, env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "jobs.ops.luigid", action, "--port", str(port), "--root", str(root)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def luigid_done(root: Path) -> Counter:
    """DONE events per task id in luigid's task history."""
    with contextlib.closing(sqlite3.connect(root / "luigid" / "task_history.sqlite")) as con:
        query = (
            "SELECT t.task_id FROM tasks t JOIN task_events e ON e.task_id = t.id WHERE e.event_name='DONE'"
        )
        return Counter(task_id for (task_id,) in con.execute(query))


def outputs(root: Path) -> dict[str, object]:
    """What a run produced, without times and the root's own path: each stage's manifests (one
    per partition), the daily decisions and the model files (byte-identical by design)."""
    # MLflow names its artifact folders by run id (a random uuid); the model files are compared below
    manifests = sorted(
        str(p.relative_to(root)) for p in root.rglob("manifest.json") if "registry" not in p.parts
    )
    daily = {}
    for path in sorted(root.glob("wafer_yield_daily/*/date=*/manifest.json")):
        record = json.loads(path.read_text())
        keep = ("decision", "why", "lifecycle", "quality_gate", "dies", "scored", "low_yield_wafers")
        daily[path.parent.name] = {k: record[k] for k in keep}
    models = {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.glob("models/**/model.joblib"))
    }
    return {"manifests": manifests, "daily": daily, "models": models}


def predictions(root: Path) -> dict[str, pd.DataFrame]:
    return {
        str(p.relative_to(root)): pd.read_parquet(p)
        for p in sorted(root.glob("predictions/*/date=*/*.parquet"))
    }


def test_two_hosts_share_one_luigid_and_run_each_task_once(tmp_path: Path) -> None:
    root, alone = tmp_path / "shared", tmp_path / "alone"
    args = ["--root", str(root), "--start", "2026-11-10", "--days", "3", "--fabs", "fab1", "--lots", "1"]
    assert simulate([*args, "--wafers", "2", "--quiet"]) == 0
    shutil.copytree(root, alone)
    site_cfg = tmp_path / "site.cfg"
    site_cfg.write_text(SITE_CFG)
    hosts = [checkout(tmp_path / name) for name in ("host-a", "host-b")]
    for repo in hosts:  # each imports the suite from its own folder, not from this one
        probe = [sys.executable, "-c", "import jobs.ops.workers as w; print(w.__file__)"]
        env = host_env(repo, site_cfg)
        where = subprocess.run(probe, cwd=repo, env=env, capture_output=True, text=True)
        assert where.stdout.strip() == str(repo / "jobs" / "ops" / "workers.py"), where.stderr

    port = free_port()
    luigid("start", root, port, host_env(REPO, site_cfg))
    try:
        started = [worker(repo, site_cfg, root, port) for repo in hosts]
        finished = [process.communicate(timeout=180) for process in started]
    finally:
        luigid("stop", root, port, host_env(REPO, site_cfg))
    assert [p.returncode for p in started] == [0, 0], [err[-2000:] for _, err in finished]

    rows = assert_each_task_ran_once(root)
    done = [r for r in rows if r["status"] == "DONE"]
    assert len({r["invocation"] for r in done}) == 2  # both hosts did some of the work
    in_luigid = luigid_done(root)
    assert set(in_luigid.values()) == {1}, [t for t, n in in_luigid.items() if n > 1]
    assert {r["task_id"] for r in done} <= set(in_luigid)
    assert not [p for p in root.rglob("*.tmp-*")]  # nothing half-written left behind

    # the same floor, one worker, no luigid: the same outputs
    single = [sys.executable, "-m", "jobs.ops.schedules", "run", "wafer-yield", "--now", NIGHT,
              "--local-scheduler", "--", "--workers", "1", "--paths-root", str(alone)]  # fmt: skip
    one = subprocess.run(single, cwd=REPO, env=host_env(REPO, site_cfg), capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    shared, reference = outputs(root), outputs(alone)
    assert len(shared["daily"]) == 3 and shared["models"]
    assert shared == reference
    scored, scored_alone = predictions(root), predictions(alone)
    assert scored and scored.keys() == scored_alone.keys()
    for name, frame in scored.items():  # the same rows and values, to the last bit of p_fail
        pd.testing.assert_frame_equal(frame, scored_alone[name], check_exact=True)


def test_a_worker_without_luigid_says_so_in_one_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "jobs.ops.workers", "run", "wafer-yield", "--scheduler-port", "1",
               "--root", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 35, done.stderr
    assert "luigid is not answering at http://127.0.0.1:1" in done.stderr and "Traceback" not in done.stderr
