"""The schedules: the Range commands they run, the crontab and systemd units in the repo, their
installer, and a scheduled run replayed end to end (local scheduler) with its SLA check."""

from __future__ import annotations

import configparser
import datetime as dt
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.ops.schedules import CRON_BEGIN, crontab_text, merged_crontab, systemd_units
from jobs.ops.workflows import WORKFLOWS
from jobs.simulation.simulate import main as simulate
from tests.helpers import REPO, free_port

NOW = dt.datetime(2026, 11, 24, 3, 7, tzinfo=dt.UTC)
CRON_TIMES = {"wafer-yield": "0 2 * * *", "fab-merge": "0 * * * *", "quality-monitor": "*/15 * * * *"}
CALENDARS = {
    "wafer-yield": "*-*-* 02:00:00 UTC",
    "fab-merge": "*-*-* *:00:00 UTC",
    "quality-monitor": "*-*-* *:00/15:00 UTC",
}


def test_each_run_is_a_range_up_to_the_period_that_just_ended() -> None:
    tails = {
        name.replace("_", "-"): " ".join(w.scheduled_command(NOW, 2)[3:]) for name, w in WORKFLOWS.items()
    }
    common = "--now 1795489620 --workers 2"
    waiting = "--worker-keep-alive --worker-retry-external-tasks --scheduler-retry-delay 300"
    assert tails["wafer-yield"] == (
        "--module jobs.wafer_yield RangeDaily --of WaferYieldDaily "
        f"--start 2026-11-10 --stop 2026-11-24 {common} {waiting}"
    )
    assert tails["fab-merge"] == (
        "--module jobs.fab_merge RangeHourly --of FabMergeHourly --start 2026-11-22T03 --stop 2026-11-24T03 "
        f"{common} {waiting}"
    )
    assert tails["quality-monitor"] == (
        "--module jobs.quality_monitor RangeByMinutes --of QualityMonitor --minutes-interval 15 "
        f"--start 2026-11-23T2100 --stop 2026-11-24T0300 {common}"
    )


def test_the_crontab_runs_each_workflow_at_its_time() -> None:
    text = crontab_text()
    assert "@" not in text.replace("@reboot", "") and "CRON_TZ=UTC" in text
    entries = [line.split() for line in text.splitlines() if line and not line.startswith(("#", "CRON_TZ"))]
    runs = {e[7]: " ".join(e[:5]) for e in entries if e[5].endswith("scripts/schedule") and e[6] == "run"}
    assert runs == CRON_TIMES
    assert [e[1:3] for e in entries if e[0] == "@reboot"] == [[f"{REPO}/scripts/luigid", "start"]]
    for entry in entries:
        command = entry[1] if entry[0] == "@reboot" else entry[5]
        assert os.access(command, os.X_OK), command


def test_the_systemd_timers_start_the_same_runs() -> None:
    units = systemd_units()
    for name, calendar in CALENDARS.items():
        timer, service = (configparser.ConfigParser(interpolation=None) for _ in range(2))
        timer.read_string(units[f"stdf-{name}.timer"])
        service.read_string(units[f"stdf-{name}.service"])
        assert timer["Timer"]["OnCalendar"] == calendar and timer["Timer"]["Persistent"] == "true"
        assert service["Service"]["ExecStart"] == f"{REPO}/scripts/schedule run {name}"
        assert service["Unit"]["After"] == "stdf-luigid.service"
    luigid = configparser.ConfigParser(interpolation=None)
    luigid.read_string(units["stdf-luigid.service"])
    assert luigid["Service"]["ExecStart"] == f"{REPO}/scripts/luigid start"
    assert luigid["Service"]["PIDFile"].endswith("/luigid/luigid.pid")


def test_installing_the_crontab_keeps_the_users_lines_and_is_idempotent(tmp_path: Path) -> None:
    """Through the real command line, with a `crontab` that keeps the table in a file."""
    table = tmp_path / "table"
    table.write_text("MAILTO=ops@example.com\n30 4 * * * /usr/local/bin/backup\n")
    stub = tmp_path / "bin" / "crontab"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\nif [ "$1" = "-l" ]; then cat {table}; else cat > {table}; fi\n')
    stub.chmod(0o755)
    site_cfg = tmp_path / "site.cfg"
    site_cfg.write_text(f"[paths]\nroot = {tmp_path / 'data'}\n")
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}", "LUIGI_CONFIG_PATH": str(site_cfg)}

    def schedule(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "jobs.ops.schedules", *args]
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)

    for _ in range(2):
        assert schedule("install", "--cron").returncode == 0
    installed = table.read_text()
    assert installed.count(CRON_BEGIN) == 1 and "/usr/local/bin/backup" in installed
    assert f"{tmp_path / 'data' / 'logs'}/wafer-yield.log" in installed
    assert "scripts/schedule run wafer-yield" in installed
    assert schedule("uninstall", "--cron").returncode == 0
    assert table.read_text() == "MAILTO=ops@example.com\n30 4 * * * /usr/local/bin/backup\n"
    assert merged_crontab("", None) == ""


def test_installing_the_systemd_units_dry_run() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "jobs.ops.schedules", "install", "--systemd", "--dry-run"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "stdf-wafer-yield.timer" in out and "daemon-reload" in out
    assert "enable --now stdf-luigid.service stdf-fab-merge.timer" in out


@pytest.fixture()
def site(tmp_path: Path) -> tuple[Path, dict]:
    """A small floor and a luigi.cfg of the site's own settings over the repo's."""
    root = tmp_path / "data"
    args = ["--root", str(root), "--start", "2026-11-10", "--days", "3", "--fabs", "fab1", "--lots", "1"]
    assert simulate([*args, "--wafers", "2", "--quiet"]) == 0
    site_cfg = tmp_path / "site.cfg"
    site_cfg.write_text(
        f"[paths]\nroot = {root}\n[wafer_yield]\nfabs = fab1\nmin_devices = 1000\n"
        f"[schedule]\nwafer_yield_days = 3\n[sla]\nworkflows = wafer_yield\n[models]\nauto_approve = true\n"
        f"[core]\ndefault_scheduler_port = {free_port()}\n"
    )
    return root, {**os.environ, "LUIGI_CONFIG_PATH": str(site_cfg)}


def test_a_scheduled_run_catches_up_the_missed_days_and_checks_the_slas(site: tuple[Path, dict]) -> None:
    root, env = site
    command = [
        str(REPO / "scripts/schedule"),
        "run",
        "wafer-yield",
        "--now",
        "2026-11-13T02:00",
        "--local-scheduler",
        "--since",  # the SLA baseline (a replay has none of its own) ...
        "2026-11-10",
        "--alert",  # ... and a replay records and alerts its misses only when asked to
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RangeDaily --of WaferYieldDaily --start 2026-11-10 --stop 2026-11-13" in done.stdout
    summaries = sorted(p.parent.name for p in (root / "wafer_yield_daily").glob("v*/date=*/manifest.json"))
    assert summaries == ["date=2026-11-10", "date=2026-11-11", "date=2026-11-12"]
    with sqlite3.connect(root / "history" / "runs.sqlite") as con:
        daily = con.execute("SELECT count(*) FROM runs WHERE family='WaferYieldDaily' AND status='DONE'")
        assert daily.fetchone() == (3,)
        misses = con.execute("SELECT period, reason FROM sla_misses").fetchall()
    # replayed as of 2026-11-13 02:00: days 11-10 and 11-11 were due (06:00 the next morning) and
    # not done when the run started; 11-12 is due only at 11-13 06:00
    assert misses == [
        ("2026-11-10", "not done, nothing running"),
        ("2026-11-11", "not done, nothing running"),
    ]
    assert "SLA missed: wafer_yield 2026-11-10" in done.stdout

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "SLA missed" not in again.stdout  # once per miss


def test_a_scheduled_run_without_luigid_says_so_and_fails(site: tuple[Path, dict]) -> None:
    _, env = site
    command = [sys.executable, "-m", "jobs.ops.schedules", "run", "wafer-yield"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 35
    assert done.stderr.count("\n") == 1 and "luigid is not answering at http://127.0.0.1:" in done.stderr
