"""People's actions on the model registry (jobs/ops/models.py, scripts/models) on a real embedded
MLflow store with real model files: a champion, a challenger awaiting approval and a retired
version, made by the lifecycle's own day step; and a writer killed in the middle of a change."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest

from jobs.domain import lifecycle, registry
from jobs.domain import model as ym
from jobs.domain.model import ModelIntegrityError
from jobs.domain.registry import CHALLENGER, CHAMPION, RegistryError
from jobs.ops import models
from tests.helpers import REPO, free_port, luigi_settings

NAME = "wafer_yield_PMX7"  # luigi.cfg [models] registered_model: the CLI finds the same model
RULES = lifecycle.LifecycleRules(0.0, 0.5, 0.01, 0.01, 2000, 0.05, 0.05)
SMALL = ym.ModelParams(n_estimators=10, max_samples=2000, max_depth=6, min_samples_leaf=20, n_jobs=1)
NEXT_DAY = "2026-11-13"  # the day after the last lifecycle day of the fixture


def features(n: int, seed: int) -> pd.DataFrame:
    """Dies whose final-test failure depends on raw_a and raw_b."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    failed = rng.random(n) < 1 / (1 + np.exp(-(-2 + 1.5 * a + 0.8 * b)))
    return pd.DataFrame({"raw_a": a, "raw_b": b, "ws_passed": True, "ft_failed": pd.array(failed, "boolean")})


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three saved models (different seeds: different files)."""
    folders = []
    for seed in (1, 2, 3):
        folder = tmp_path_factory.mktemp(f"model{seed}")
        ym.save_model(ym.train_model(features(3000, seed), ["raw_a", "raw_b"], SMALL, seed=seed), folder)
        folders.append(folder)
    return folders


def lifecycle_day(store: registry.Store, plan: lifecycle.Plan, day: str) -> lifecycle.Plan:
    """One lifecycle day as Lifecycle runs it (no live labels): the day's events, mirrored."""
    with registry.locked(store):
        plan, happened = lifecycle.day_step(plan, registry.actions_for(store, day), {"dies": 0}, RULES)
        registry.mirror(store, lifecycle.registry_change(plan, happened, day), day)
    return plan


def validated(number: int, day: str, decision: str, auc: float) -> dict:
    validation = {"auc": auc, "accuracy": 0.9, "brier": 0.1}
    return {"action": "validated", "version": number, "effective_day": day, "decision": decision,
            "why": f"test: {decision}", "validation": validation}  # fmt: skip


def store_of(root: Path) -> registry.Store:
    """The store [models] gives this data root (an empty tracking_uri: the embedded one)."""
    return registry.local_store(root / "registry", NAME, root / "locks" / "registry.lock")


@pytest.fixture
def root(tmp_path: Path, model_folders: list[Path]) -> Path:
    """A data root whose registry has v1 champion (day 1), v2 challenger awaiting approval and v3
    retired (lost its validation, day 2)."""
    store = store_of(tmp_path)
    with registry.locked(store):
        numbers = [registry.register(store, f, {"trained_for": d}, {}) for f, d in
                   zip(model_folders, ("2026-11-11", "2026-11-12", "2026-11-12"), strict=True)]  # fmt: skip
        assert numbers == [1, 2, 3]
        registry.record_validation(store, 1, [validated(1, "2026-11-11", "won", 0.80),
                                              {"action": "approve", "version": 1, "by": "auto_approve",
                                               "effective_day": "2026-11-11"}])  # fmt: skip
    plan = lifecycle_day(store, lifecycle.empty_plan(), "2026-11-11")
    with registry.locked(store):
        registry.record_validation(store, 2, [validated(2, "2026-11-12", "won", 0.85)])
        registry.record_validation(store, 3, [validated(3, "2026-11-12", "lost", 0.70)])
    lifecycle_day(store, plan, "2026-11-12")
    assert registry.aliases(store) == {CHAMPION: 1, CHALLENGER: 2}
    assert [v["state"] for v in registry.versions(store)] == ["champion", "awaiting_approval", "retired"]
    return tmp_path


def snapshot(store: registry.Store) -> tuple:
    return registry.aliases(store), registry.versions(store), registry.history(store)


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    """scripts/models as a person runs it."""
    env = {k: v for k, v in os.environ.items() if k != "LUIGI_CONFIG_PATH"}
    return subprocess.run([str(REPO / "scripts" / "models"), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=180, env=env, check=False)  # fmt: skip


def run_main(root: Path, *args: str) -> int:
    """jobs.ops.models.main in this process; its --root setting ends with the call."""
    with luigi_settings(paths={}):
        return models.main(["--root", str(root), *args])


def one_line(text: str) -> str:
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_approve_sets_the_state_and_records_an_event_for_the_next_day(root: Path) -> None:
    store = store_of(root)
    event = models.approve(store, 2, "ana", "looks fine")
    tags = registry.version(store, 2)["tags"]
    assert (
        tags["state"] == "approved" and tags["approved_by"] == "ana" and tags["approval_note"] == "looks fine"
    )
    assert tags["approved_at"].startswith("20")
    recorded = registry.history(store)[-1]
    assert recorded == event and recorded["number"] == len(registry.history(store))
    assert {k: recorded[k] for k in ("action", "version", "by", "note", "effective_day")} == {
        "action": "approve", "version": 2, "by": "ana", "note": "looks fine", "effective_day": NEXT_DAY
    }  # fmt: skip
    assert registry.decided(store, 2)  # Approval(version=2) completes
    # the lifecycle takes it on that day: approved, and the rollout starts at once
    plan = read_plan(store)
    lifecycle_day(store, plan, NEXT_DAY)
    assert registry.version(store, 2)["tags"]["state"] == "rolling_out"
    assert registry.version(store, 2)["tags"]["rollout_share"] == "0.1"
    with pytest.raises(RegistryError, match="version 2 is rolling_out, not awaiting approval"):
        models.approve(store, 2, "ana")


def read_plan(store: registry.Store) -> lifecycle.Plan:
    """The plan the registry shows (champion v1 with challenger v2 awaiting approval)."""
    plan = lifecycle.plan_with_champion(1, registry.validation_of(registry.version(store, 1)))
    challenger = registry.version(store, 2)
    plan["challenger"] = {"version": 2, "state": "awaiting_approval", "share": 0.0,
                          "validation": registry.validation_of(challenger)}  # fmt: skip
    return plan


def test_the_script_refuses_a_retired_or_unknown_version_in_one_line(root: Path, capsys) -> None:
    store = store_of(root)
    before = snapshot(store)
    done = cli(root, "approve", "3", "--by", "ana")
    assert done.returncode == 2 and done.stdout == ""
    assert one_line(done.stderr) == "scripts/models approve: version 3 is retired, not awaiting approval"
    assert run_main(root, "approve", "9", "--by", "ana") == 2
    assert "no version 9" in one_line(capsys.readouterr().err)
    assert run_main(root, "reject", "1", "--by", "ana") == 2
    assert one_line(capsys.readouterr().err) == (
        "scripts/models reject: version 1 is champion, not awaiting approval, approved or rolling out"
    )
    assert snapshot(store) == before


def test_reject_deletes_the_challenger_alias(root: Path) -> None:
    store = store_of(root)
    models.reject(store, 2, "ana", "drifted features")
    assert registry.aliases(store) == {CHAMPION: 1}
    record = registry.version(store, 2)
    assert record["state"] == "rejected" and record["tags"]["rejected_by"] == "ana"
    event = registry.history(store)[-1]
    assert event["action"] == "reject" and event["aliases"] == {CHALLENGER: None}
    assert event["effective_day"] == NEXT_DAY and event["note"] == "drifted features"


def artifact_file(store: registry.Store, number: int) -> Path:
    """The registered copy of a version's model.joblib, under the store's artifacts folder."""
    path = Path(urlparse(registry.version(store, number)["source"]).path) / ym.MODEL_FILE
    assert path.is_file() and path.is_relative_to(Path(urlparse(store.artifacts).path))
    return path


def test_promote_refuses_a_tampered_model_file_and_changes_nothing(root: Path, capsys) -> None:
    store = store_of(root)
    artifact_file(store, 2).write_bytes(artifact_file(store, 3).read_bytes())  # another model's bytes
    before = snapshot(store)
    with pytest.raises(ModelIntegrityError, match="version 2: its model file has sha256"):
        models.promote(store, 2, "bob")
    assert run_main(root, "promote", "2", "--by", "bob") == 2
    assert one_line(capsys.readouterr().err).startswith(f"scripts/models promote: {NAME} version 2:")
    assert snapshot(store) == before
    # a version without its feature contract is no candidate either
    store.client().delete_model_version_tag(NAME, "3", registry.CONTRACT)
    with pytest.raises(RegistryError, match="version 3 has no"):
        models.promote(store, 3, "bob")
    with pytest.raises(RegistryError, match="version 1 is the champion already"):
        models.promote(store, 1, "bob")
    assert registry.history(store) == before[2]


def test_rollback_after_a_promote_restores_the_earlier_champion(root: Path) -> None:
    store = store_of(root)
    with pytest.raises(RegistryError, match="no earlier champion"):
        models.rollback(store, "carl")
    promoted = models.promote(store, 2, "bob", "urgent fix")
    assert registry.aliases(store) == {CHAMPION: 2}  # the challenger alias went with it
    assert [v["state"] for v in registry.versions(store)] == ["replaced", "champion", "retired"]
    assert promoted["validation"] == {"auc": 0.85, "accuracy": 0.9, "brier": 0.1}
    assert registry.champions(store) == [1, 2] and registry.previous_champion(store) == 1
    back = models.rollback(store, "carl", "live accuracy fell")
    assert registry.aliases(store) == {CHAMPION: 1}
    assert [v["state"] for v in registry.versions(store)] == ["champion", "rolled_back", "retired"]
    assert {k: back[k] for k in ("action", "version", "to", "by", "effective_day")} == {
        "action": "rollback", "version": 2, "to": 1, "by": "carl", "effective_day": NEXT_DAY
    }  # fmt: skip
    with pytest.raises(RegistryError, match="version 1 is the champion and there is no earlier champion"):
        models.rollback(store, "carl")
    # the lifecycle's day applies both events to its plan and arrives where the registry is
    plan = lifecycle_day(store, read_plan(store), NEXT_DAY)
    assert lifecycle.summary(plan)["champion"] == 1 and plan["challenger"] is None
    assert registry.aliases(store) == {CHAMPION: 1} and registry.champions(store) == [1]


def test_list_show_and_history_print_the_registry(root: Path, capsys) -> None:
    assert run_main(root, "list") == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == list(models.COLUMNS)
    assert [line.split() for line in lines] == [
        ["1", "champion", "champion", "1.0", "2026-11-11", "0.8000", "0.9000", "auto_approve"],
        ["2", "awaiting_approval", "challenger", "0", "2026-11-12", "0.8500", "0.9000", "-"],
        ["3", "retired", "-", "0", "2026-11-12", "0.7000", "0.9000", "-"],
    ]
    done = cli(root, "show", "2")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    record = registry.version(store_of(root), 2)
    assert shown["source"] == record["source"] and shown["run_id"] == record["run_id"]
    assert shown["aliases"] == [CHALLENGER] and shown["state"] == "awaiting_approval"
    assert shown["tags"]["validation"] == {"auc": 0.85, "accuracy": 0.9, "brier": 0.1}  # decoded
    assert shown["tags"]["feature_contract"] == ["raw_a", "raw_b"]
    assert shown["run"]["params"]["n_estimators"] == "10"
    assert run_main(root, "history") == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(registry.history(store_of(root))) == 6
    assert printed[0].split() == ["1", "2026-11-11", "validated", "v1", "won:", "test:", "won"]
    assert printed[1].split() == ["2", "2026-11-11", "approve", "v1", "by", "auto_approve"]
    assert printed[2].split()[2:] == [
        "day",
        "-",
        "by",
        "jobs.wafer_yield",
        "challenger",
        "v1;",
        "champion",
        "v1",
    ]
    assert printed[-1].endswith("challenger v2; kept out v3")


def test_a_missing_root_or_registry_server_is_one_line_and_exit_1(tmp_path: Path, capsys) -> None:
    assert run_main(tmp_path / "nowhere", "list") == 1
    assert "no data root" in one_line(capsys.readouterr().err)
    assert run_main(tmp_path, "list") == 1  # no registry made by a look
    assert (
        one_line(capsys.readouterr().err)
        == f"scripts/models: no model registry at {tmp_path}/registry/mlflow.db"
    )
    assert not (tmp_path / "registry").exists()
    with luigi_settings(models={"registered_model": "../elsewhere"}):
        assert run_main(tmp_path, "list") == 1
    assert "registered_model '../elsewhere'" in one_line(capsys.readouterr().err)
    config = tmp_path / "luigi.cfg"
    config.write_text(
        f"[paths]\nroot = {tmp_path}\n[models]\ntracking_uri = http://127.0.0.1:{free_port()}\n"
    )
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(config)}
    done = subprocess.run([str(REPO / "scripts" / "models"), "list"], capture_output=True, text=True,
                          timeout=180, env=env, check=False)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert one_line(done.stderr).startswith("scripts/models: the model registry at http://127.0.0.1:")


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from mlflow import MlflowClient
from jobs.domain import registry

store = registry.local_store(Path(sys.argv[1]) / "registry", sys.argv[2], Path(sys.argv[1]) / "registry.lock")
original, calls = MlflowClient.set_registered_model_alias, []

def dies_on_the_second(self, *args, **kwargs):
    calls.append(args)
    if len(calls) > 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args, **kwargs)

MlflowClient.set_registered_model_alias = dies_on_the_second
with registry.locked(store):
    event = {"action": "promote", "version": 2, "by": "test", "effective_day": "2026-11-13"}
    tags = {2: {"state": "champion"}, 3: {"state": "approved"}}
    registry.apply(store, registry.Change(event, {"champion": 2, "challenger": 3}, tags))
"""


def test_a_writer_killed_in_apply_leaves_pending_and_the_next_lock_finishes_it(
    tmp_path: Path, model_folders: list[Path]
) -> None:
    store = registry.local_store(tmp_path / "registry", NAME, tmp_path / "registry.lock")
    with registry.locked(store):
        for folder in model_folders:
            registry.register(store, folder, {}, {})
        registry.apply(store, registry.Change({"action": "day"}, {CHAMPION: 1, CHALLENGER: 2}))
    script = textwrap.dedent(KILLED_WRITER)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path), NAME], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    tags = store.client().get_registered_model(NAME).tags
    assert json.loads(tags[registry.PENDING])["event"]["action"] == "promote"  # the journal survived
    assert registry.aliases(store) == {CHAMPION: 2, CHALLENGER: 2}  # half-way: one alias moved
    assert len(registry.history(store)) == 1
    with registry.locked(store):  # the next writer (or reader) finishes the change first
        pass
    assert registry.PENDING not in store.client().get_registered_model(NAME).tags
    assert registry.aliases(store) == {CHAMPION: 2, CHALLENGER: 3}
    assert [v["state"] for v in registry.versions(store)] == ["registered", "champion", "approved"]
    events = registry.history(store)
    assert [e["action"] for e in events] == ["day", "promote"]
    assert events[-1]["number"] == 2 and events[-1]["aliases"] == {CHAMPION: 2, CHALLENGER: 3}
