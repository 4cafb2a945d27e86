"""Parameters checked where they enter (jobs/pipeline/parameters.py): real `luigi` command lines
with fabs that are not configured and dates no run can be for. Each is refused in one line,
exits non-zero and writes nothing, inside the data root or outside it."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.pipeline.parameters import ParameterError, inside_root
from jobs.wafer_yield import IngestFab
from tests.helpers import REPO, luigi_settings


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture()
def site(tmp_path: Path) -> tuple[Path, dict]:
    """A data root two levels down in tmp_path (so `../..` lands in tmp_path) and the site's luigi.cfg,
    and an STDF day outside the root that a path as --fab would reach."""
    root = tmp_path / "a" / "b" / "data"
    root.mkdir(parents=True)
    outside = tmp_path / "elsewhere" / "2026-11-20"
    outside.mkdir(parents=True)
    (outside / "lot.stdf.gz").write_bytes(b"not read")
    (outside / "_READY").touch()
    config = tmp_path / "site.cfg"
    config.write_text(f"[paths]\nroot = {root}\n[wafer_yield]\nfabs = fab1,fab2\n[merge]\nfabs = fab1\n")
    return root, {**os.environ, "LUIGI_CONFIG_PATH": str(config)}


def luigi_command(env: dict, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "luigi", "--module", *args, "--local-scheduler"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


REFUSED = [
    (
        ["jobs.wafer_yield", "IngestFab", "--fab", "../../x", "--date", "2026-11-20"],
        "--fab ../../x: not a configured fab; [wafer_yield] fabs in luigi.cfg: fab1, fab2",
    ),
    (["jobs.wafer_yield", "IngestFab", "--fab", "{outside}", "--date", "2026-11-20"], "not a configured fab"),
    (["jobs.wafer_yield", "IngestFab", "--fab", "fab1/../fab2", "--date", "2026-11-20"], "not a configured"),
    (["jobs.wafer_yield", "IngestFab", "--fab", "fab9", "--date", "2026-11-20"], "--fab fab9: not a"),
    (
        ["jobs.fab_merge", "FabHour", "--fab", "fab2", "--hour", "2026-11-20T03"],
        "[merge] fabs in luigi.cfg: fab1",
    ),
    (
        ["jobs.wafer_yield", "WaferYieldDaily", "--date", "9999-12-31"],
        "--date 9999-12-31: not a plausible date",
    ),
    (["jobs.wafer_yield", "WaferYieldDaily", "--date", "0001-01-01"], "the suite takes 2000-01-01 to"),
    (["jobs.wafer_yield", "WaferYieldDaily", "--date", "1900-01-01"], "([plausible_dates] in luigi.cfg)"),
    (["jobs.wafer_yield", "WaferYieldDaily", "--date", "2026-02-30"], "--date 2026-02-30: not a date like"),
    (["jobs.fab_merge", "FabMergeHourly", "--hour", "2999-01-01T00"], "not a plausible UTC hour"),
    (["jobs.quality_monitor", "QualityMonitor", "--window", "1999-12-31T2345"], "not a plausible UTC minute"),
]


@pytest.mark.parametrize(("args", "message"), REFUSED, ids=[" ".join(a[1:]) for a, _ in REFUSED])
def test_a_refused_parameter_is_one_line_and_writes_nothing(
    site: tuple[Path, dict], tmp_path: Path, args: list[str], message: str
) -> None:
    root, env = site
    args = [a.format(outside=tmp_path / "elsewhere") for a in args]
    before = tree(tmp_path)
    done = luigi_command(env, *args)
    assert done.returncode != 0
    assert done.stderr.startswith("ERROR: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert tree(tmp_path) == before and tree(root) == []


def test_configured_fab_names_must_be_plain_folder_names(site: tuple[Path, dict], tmp_path: Path) -> None:
    root, env = site
    (tmp_path / "site.cfg").write_text(f"[paths]\nroot = {root}\n[wafer_yield]\nfabs = fab1,../fab2\n")
    done = luigi_command(env, "jobs.wafer_yield", "IngestFab", "--fab", "fab1", "--date", "2026-11-20")
    assert done.returncode != 0 and done.stderr.count("\n") == 1
    assert "[wafer_yield] fabs: '../fab2' is not a plain folder name" in done.stderr
    assert tree(root) == []


def test_a_plausible_command_still_runs(site: tuple[Path, dict]) -> None:
    """A configured fab and a past day: its landing deadline has passed, so the day is settled."""
    _, env = site
    done = luigi_command(env, "jobs.wafer_yield", "FabDayLanded", "--fab", "fab1", "--date", "2026-11-20")
    assert done.returncode == 0 and "ERROR" not in done.stderr, done.stderr
    assert "1 complete ones were encountered" in done.stdout + done.stderr


def test_tasks_built_in_python_check_their_fab_and_paths(tmp_path: Path) -> None:
    with luigi_settings(paths={"root": tmp_path}, wafer_yield={"fabs": "fab1"}):
        with pytest.raises(ParameterError, match=r"--fab fab2: not a configured fab"):
            IngestFab(fab="fab2", date=dt.date(2026, 11, 20))
        assert IngestFab(fab="fab1", date=dt.date(2026, 11, 20)).folder().is_relative_to(tmp_path)
        assert inside_root(tmp_path / "landing" / "fab1") == tmp_path / "landing" / "fab1"
        for escaping in (tmp_path / "landing" / ".." / ".." / "x", Path("/etc/passwd"), tmp_path.parent):
            with pytest.raises(ParameterError, match="outside the data root"):
                inside_root(escaping)
