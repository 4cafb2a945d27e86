"""Published files and folders get the mode a plain write would under the umask, whoever writes
them (stages, conversions and verdicts, quarantine, alerts, history, models and the MLflow registry,
the dashboard); [yield_model] group_readable opens the models to the group whatever the umask.

A small chain under each umask, as a shell runs it: the simulated floor (a corrupted file, a fab
that never delivers), the wafer-yield day that trains and deploys the first model, the dashboard.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.files import TEMP_MARK
from tests.helpers import REPO

FLOOR = (
    "--start 2026-11-10 --days 3 --fabs fab1 --lots 1 --wafers 2 --faults corrupted:fab1:2026-11-11 --quiet"
)


def run_chain(tmp_path: Path, umask: int, group_readable: bool) -> Path:
    root = tmp_path / "data"
    config = tmp_path / "site.cfg"
    config.write_text(
        f"[paths]\nroot = {root}\n[wafer_yield]\nfabs = fab1,fab2\nmin_devices = 500\n"
        f"[yield_model]\nn_estimators = 20\ngroup_readable = {str(group_readable).lower()}\n"
        "[models]\nauto_approve = true\n"
    )
    python = sys.executable
    script = (
        f"umask {umask:03o} && {python} -m jobs.simulation.simulate --root {root} {FLOOR} && "
        f"{python} -m luigi --module jobs.wafer_yield WaferYieldDaily --date 2026-11-12 --local-scheduler && "
        f"{python} -m jobs.ops.dashboard --days 3000"
    )
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(config)}
    done = subprocess.run(
        ["sh", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in root.rglob("*")}


@pytest.mark.parametrize(
    ("umask", "group_readable"),
    [(0o022, False), (0o027, False), (0o077, True)],
    ids=["022", "027", "077+group"],
)
def test_every_published_file_and_folder_has_the_umasks_mode(
    tmp_path: Path, umask: int, group_readable: bool
) -> None:
    root = run_chain(tmp_path, umask, group_readable)
    found = modes(root)
    for kind in ("quarantine", "alerts", "history", "registry", "dashboard", "converted", "ingest"):
        assert any(path.startswith(kind) for path in found), f"the chain wrote nothing to {kind}/"
    assert any(path.endswith("model.joblib") for path in found)
    assert not [path for path in found if TEMP_MARK in path]  # and no temporary is left
    wrong = {}
    for path, mode in found.items():
        folder = (root / path).is_dir()
        expected = (0o777 if folder else 0o666) & ~umask
        if group_readable and path.startswith(("models", "registry")):
            expected |= 0o050 if folder else 0o040
        if mode != expected:
            wrong[path] = f"{mode:o}, not {expected:o}"
    assert wrong == {}
