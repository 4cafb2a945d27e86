"""The MLflow model registry (jobs/domain/registry.py) on a real local store: registering once,
loading only a model whose file matches its recorded sha256, a notebook's version, journaled
changes."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from jobs.domain import model as ym
from jobs.domain import registry
from tests.helpers import free_port
from tests.test_model import SMALL, synthetic


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    train = synthetic(4000, seed=3)
    features = ym.model_features(ym.select_tests(train, 4))
    folder = tmp_path_factory.mktemp("model")
    ym.save_model(ym.train_model(train, features, SMALL), folder)
    return folder


@pytest.fixture()
def store(tmp_path: Path) -> registry.Store:
    return registry.local_store(
        tmp_path / "registry", "wafer_yield_TEST", tmp_path / "locks" / "registry.lock"
    )


def test_a_model_is_registered_once_with_its_contract_and_loads_back(
    store: registry.Store, saved: Path
) -> None:
    with registry.locked(store):
        first = registry.register(store, saved, {"trained_for": "2026-11-12"}, {"auc": 0.8})
        again = registry.register(store, saved, {"trained_for": "2026-11-12"}, {})
    assert first == again == 1  # one version per model file (its sha256)
    record = registry.version(store, first)
    meta = json.loads((saved / "model.json").read_text())
    assert record["tags"][registry.SHA256] == meta["sha256"] and record["state"] == "registered"
    assert json.loads(record["tags"][registry.CONTRACT]) == meta["features"]
    run = store.client().get_run(record["run_id"])  # an MLflow run: params, metrics, tags
    assert run.data.metrics["auc"] == 0.8 and run.data.params["n_estimators"] == "30"
    loaded = registry.load(store, first, store.lock.parent / "scratch")
    frame = synthetic(200, seed=9)
    assert (loaded.predict_proba(frame) == ym.load_model(saved).predict_proba(frame)).all()
    assert not list((store.lock.parent / "scratch").iterdir())  # fetched files are gone again


def test_a_tampered_model_file_is_refused(store: registry.Store, saved: Path, tmp_path: Path) -> None:
    with registry.locked(store):
        number = registry.register(store, saved, {}, {})
    source = Path(registry.version(store, number)["source"].removeprefix("file://"))
    (source / "model.joblib").write_bytes((source / "model.joblib").read_bytes() + b"\0")
    with pytest.raises(ym.ModelIntegrityError, match="recorded when it was registered"):
        registry.load(store, number, tmp_path / "scratch")
    with pytest.raises(registry.RegistryError, match="has no version 9"):
        registry.version(store, 9)


def test_a_notebook_version_with_a_feature_contract_is_a_candidate(
    store: registry.Store, tmp_path: Path
) -> None:
    """Registered with MLflow's own API, the way a data scientist would: a pickled estimator and
    the two contract tags."""
    train = synthetic(3000, seed=4)
    features = ym.model_features(ym.select_tests(train, 3))
    rows = ym.labelled(train)
    estimator = HistGradientBoostingClassifier(max_iter=20, random_state=0)
    estimator.fit(rows[features].to_numpy(dtype=float), rows["ft_failed"].to_numpy(dtype=bool))
    folder = tmp_path / "notebook"
    folder.mkdir()
    (folder / "model.joblib").write_bytes(pickle.dumps(estimator))
    client = store.client()
    with registry.locked(store):  # makes the registered model
        experiment = client.create_experiment("notebook", artifact_location=(tmp_path / "nb").as_uri())
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(folder), "model")
    tags = {registry.CONTRACT: json.dumps(features), registry.SHA256: ym.file_sha256(folder / "model.joblib")}
    created = client.create_model_version(
        store.model_name, f"{run.info.artifact_uri}/model", run.info.run_id, tags
    )
    loaded = registry.load(store, int(created.version), tmp_path / "scratch")
    assert isinstance(loaded, registry.ContractModel) and loaded.features == features
    p = loaded.predict_proba(synthetic(300, seed=5))
    assert p.shape == (300,) and ((p >= 0) & (p <= 1)).all()
    client.delete_model_version_tag(store.model_name, created.version, registry.CONTRACT)
    with pytest.raises(registry.RegistryError, match="not a candidate"):
        registry.load(store, int(created.version), tmp_path / "scratch")


def test_a_change_left_pending_is_finished_by_the_next_writer(store: registry.Store, saved: Path) -> None:
    with registry.locked(store):
        number = registry.register(store, saved, {}, {})
    change = registry.Change(
        {"action": "promote", "by": "test"}, {registry.CHAMPION: number}, {number: {"state": "champion"}}
    )
    journal = {"number": 1, "event": change.event, "aliases": dict(change.aliases),
               "tags": {str(number): {"state": "champion"}}, "model_tags": {}}  # fmt: skip
    store.client().set_registered_model_tag(
        store.model_name, registry.PENDING, json.dumps(journal)
    )  # then a kill
    with registry.locked(store):
        pass
    assert registry.aliases(store) == {registry.CHAMPION: number}
    assert registry.version(store, number)["state"] == "champion"
    assert [e["action"] for e in registry.history(store)] == ["promote"]
    assert registry.PENDING not in store.client().get_registered_model(store.model_name).tags


def test_mlflows_own_server_shows_the_registry_and_serves_it_to_the_suite(
    store: registry.Store, saved: Path, tmp_path: Path
) -> None:
    """`mlflow server` (what `mlflow ui` runs) on the embedded store, bound to 127.0.0.1: its
    REST API and UI show the registry, and `[models] tracking_uri` pointed at it reads it."""
    with registry.locked(store):
        number = registry.register(store, saved, {"trained_for": "2026-11-12"}, {})
        registry.apply(
            store, registry.Change({"action": "promote", "by": "test"}, {registry.CHAMPION: number})
        )
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", store.uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        query = urllib.parse.urlencode({"name": store.model_name})
        with urllib.request.urlopen(
            f"{base}/api/2.0/mlflow/registered-models/get?{query}", timeout=10
        ) as answer:
            model = json.loads(answer.read())["registered_model"]
        assert [a["alias"] for a in model["aliases"]] == ["champion"]
        with urllib.request.urlopen(base, timeout=10) as answer:
            assert b"MLflow" in answer.read()  # the UI's page
        remote = registry.Store(base, store.model_name, tmp_path / "remote.lock")
        assert registry.aliases(remote) == {registry.CHAMPION: number}
        assert registry.history(remote)[0]["action"] == "promote"
    finally:  # the server starts a job runner and its consumers: stop the whole process group
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        time.sleep(1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
