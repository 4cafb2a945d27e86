"""The model registry: MLflow's, one registered model per product. Versions carry their state,
approval and rollout share as tags; `champion` and `challenger` are MLflow aliases; every change
is an event tag on the registered model (its history). Design notes: jobs/domain/README.md.

Every change goes through `apply`, under a file lock, journaled: the whole change is written to
the registered model's `pending` tag first, then carried out step by step (each step idempotent),
then the event is recorded and `pending` removed. A process killed half-way leaves `pending`,
which the next reader or writer finishes before anything else, so the registry is never seen
half-changed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.domain.model import META_FILE, MODEL_FILE, ModelIntegrityError, YieldModel, file_sha256

CHAMPION, CHALLENGER = "champion", "challenger"
LAST_DAY = "last_day"  # the registered model's tag: the newest day the lifecycle mirrored
# Events that take effect on a day (their `effective_day`) of the lifecycle (jobs/domain/lifecycle.py).
ACTIONS = ("validated", "approve", "reject", "promote", "rollback")
PENDING = "pending"  # the registered model's tag holding a change not yet carried out
EVENT = "event."  # event tags: event.000001, ...
EXPERIMENT = "wafer_yield"
# A version's contract: the features it reads (JSON list) and the sha256 of its model file.
CONTRACT, SHA256 = "feature_contract", "model_sha256"
STATES = (
    "registered",  # not validated yet
    "awaiting_approval",  # validated, beats the champion; shadow-scored
    "approved",  # waits for its first rollout day
    "rolling_out",  # serves `rollout_share` of the wafers
    "champion",
    "retired",  # lost its validation, was superseded, or its rollout was stopped
    "rejected",  # by a person
    "rolled_back",  # was champion; demoted when its live metrics fell
    "replaced",  # was champion; a newer one took over
)

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per model fetched
for _name in ("mlflow", "alembic"):  # their INFO lines (database set-up, migrations) are noise here
    logging.getLogger(_name).setLevel(logging.WARNING)


class RegistryError(ValueError):
    """A refused registry action (unknown version, wrong state): its message is the one line a
    user sees."""


@dataclass(frozen=True)
class Store:
    """Where the registry lives: an MLflow tracking/registry URI, the registered model's name,
    and the lock file that serialises this data root's writers."""

    uri: str
    model_name: str
    lock: Path
    artifacts: str | None = None  # artifact location for a new experiment (None: the server's)
    _clients: dict = field(default_factory=dict, compare=False, repr=False)

    def client(self) -> Any:
        if "client" not in self._clients:
            from mlflow import MlflowClient

            if self.uri.startswith("sqlite:///"):  # the embedded store's folder
                Path(self.uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)

            self._clients["client"] = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._clients["client"]


def local_store(folder: Path, model_name: str, lock: Path) -> Store:
    """The embedded default: SQLite and a file artifact store in `folder` (no server)."""
    return Store(f"sqlite:///{folder / 'mlflow.db'}", model_name, lock, (folder / "artifacts").as_uri())


@contextlib.contextmanager
def locked(store: Store) -> Iterator[None]:
    """One writer at a time; a change a killed writer left pending is finished first."""
    store.lock.parent.mkdir(parents=True, exist_ok=True)
    with open(store.lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            _ensure_model(store)
            _finish_pending(store)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_model(store: Store) -> None:
    from mlflow.exceptions import MlflowException

    try:
        store.client().get_registered_model(store.model_name)
    except MlflowException:
        store.client().create_registered_model(
            store.model_name, description="The wafer-sort -> final-test yield model (jobs.wafer_yield)"
        )


# --- changes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One registry change: aliases to set (version) or delete (None), version tags to set, and
    the event that records it (action, by, why, and any numbers)."""

    event: dict[str, Any]
    aliases: Mapping[str, int | None] = field(default_factory=dict)
    tags: Mapping[int, Mapping[str, str]] = field(default_factory=dict)
    model_tags: Mapping[str, str] = field(default_factory=dict)  # on the registered model


def apply(store: Store, change: Change) -> dict[str, Any]:
    """Carry out `change` (the lock must be held: see `locked`); returns its event."""
    client = store.client()
    number = _next_event_number(store)
    journal = {
        "number": number,
        "event": change.event,
        "aliases": {k: v for k, v in change.aliases.items()},
        "tags": {str(v): dict(t) for v, t in change.tags.items()},
        "model_tags": dict(change.model_tags),
    }
    client.set_registered_model_tag(store.model_name, PENDING, json.dumps(journal, sort_keys=True))
    return _carry_out(store, journal)


def _carry_out(store: Store, journal: dict[str, Any]) -> dict[str, Any]:
    client, name = store.client(), store.model_name
    for version, tags in journal["tags"].items():
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
    for key, value in journal.get("model_tags", {}).items():
        client.set_registered_model_tag(name, key, value)
    for alias, version in journal["aliases"].items():
        if version is None:
            with contextlib.suppress(Exception):  # deleting an alias that is gone already
                client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, version)
    event = {"number": journal["number"], **journal["event"], "aliases": journal["aliases"]}
    client.set_registered_model_tag(
        name, f"{EVENT}{journal['number']:06d}", json.dumps(event, sort_keys=True)
    )
    client.delete_registered_model_tag(name, PENDING)
    return event


def _finish_pending(store: Store) -> None:
    tags = store.client().get_registered_model(store.model_name).tags
    if PENDING in tags:
        _carry_out(store, json.loads(tags[PENDING]))


def _next_event_number(store: Store) -> int:
    tags = store.client().get_registered_model(store.model_name).tags
    numbers = [int(k[len(EVENT) :]) for k in tags if k.startswith(EVENT)]
    return max(numbers, default=0) + 1


# --- reading -----------------------------------------------------------------------------------------


def aliases(store: Store) -> dict[str, int]:
    """{"champion": version, "challenger": version}, those that are set."""
    model = store.client().get_registered_model(store.model_name)
    return {alias: int(version) for alias, version in model.aliases.items()}


def history(store: Store) -> list[dict[str, Any]]:
    """Every recorded change, oldest first."""
    tags = store.client().get_registered_model(store.model_name).tags
    return [json.loads(tags[k]) for k in sorted(k for k in tags if k.startswith(EVENT))]


def version(store: Store, number: int) -> dict[str, Any]:
    """One version as a plain record: version, source, run_id, aliases, tags."""
    from mlflow.exceptions import MlflowException

    try:
        found = store.client().get_model_version(store.model_name, str(number))
    except MlflowException:
        raise RegistryError(f"{store.model_name} has no version {number}") from None
    return {
        "version": int(found.version),
        "source": found.source,
        "run_id": found.run_id,
        "aliases": list(found.aliases),
        "tags": dict(found.tags),
        "state": found.tags.get("state", "registered"),
    }


def versions(store: Store) -> list[dict[str, Any]]:
    """Every version, oldest first."""
    found = store.client().search_model_versions(f"name='{store.model_name}'")
    return sorted((version(store, int(v.version)) for v in found), key=lambda v: v["version"])


def find_version(store: Store, sha256: str) -> int | None:
    """The version whose model file has this sha256 (the suite registers a model once)."""
    for record in versions(store):
        if record["tags"].get(SHA256) == sha256:
            return record["version"]
    return None


# --- registering and loading ---------------------------------------------------------------------------


def register(store: Store, model_folder: Path, tags: Mapping[str, str], metrics: Mapping[str, float]) -> int:
    """Log a saved model (jobs/domain/model.py save_model) as an MLflow run (its parameters,
    metrics and tags, the model files as artifacts) and register it as a new version, unless a
    version with its sha256 exists; returns the version. Lock held (see `locked`)."""
    meta = json.loads((model_folder / META_FILE).read_text())
    if (existing := find_version(store, meta["sha256"])) is not None:
        return existing
    if file_sha256(model_folder / meta["file"]) != meta["sha256"]:
        raise ModelIntegrityError(f"{model_folder}: the model file does not match its {META_FILE}")
    client = store.client()
    run = client.create_run(_experiment(store), tags={"mlflow.runName": tags.get("trained_for", "model")})
    run_id = run.info.run_id
    for key, value in sorted(meta["params"].items()):
        client.log_param(run_id, key, value)
    for key, value in sorted(metrics.items()):
        if value is not None and np.isfinite(value):
            client.log_metric(run_id, key, float(value))
    for key, value in sorted(tags.items()):
        client.set_tag(run_id, key, value)
    for name in (MODEL_FILE, META_FILE):  # the model, not the stage's manifest (timings) beside it
        client.log_artifact(run_id, str(model_folder / name), "model")
    client.set_terminated(run_id)
    version_tags = {
        **tags,
        CONTRACT: json.dumps(meta["features"]),
        SHA256: meta["sha256"],
        "state": "registered",
    }
    created = client.create_model_version(
        store.model_name, f"{run.info.artifact_uri}/model", run_id, version_tags
    )
    return int(created.version)


def _experiment(store: Store) -> str:
    client = store.client()
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(EXPERIMENT, artifact_location=store.artifacts)


@dataclass
class ContractModel:
    """A registered estimator that is not a YieldModel (a notebook's): its `predict_proba` over
    the contract's feature columns, in order; missing values are the estimator's business."""

    estimator: Any
    features: list[str]

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        if len(df) == 0:
            return np.zeros(0)
        matrix = pd.DataFrame({c: df[c].astype(float) if c in df else np.nan for c in self.features})
        return self.estimator.predict_proba(matrix.to_numpy(dtype=np.float64))[:, 1]


def load(store: Store, number: int, scratch: Path) -> YieldModel | ContractModel:
    """The version's model, only if its file matches the sha256 recorded when it was registered
    (ModelIntegrityError otherwise). Its artifacts are fetched into a temporary folder below
    `scratch`, removed once the model is in memory."""
    import tempfile

    import joblib
    import mlflow.artifacts

    record = version(store, number)
    if SHA256 not in record["tags"] or CONTRACT not in record["tags"]:
        raise RegistryError(f"version {number} has no {SHA256!r} and {CONTRACT!r} tags: not a candidate")
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".model-") as work:
        fetched = Path(mlflow.artifacts.download_artifacts(artifact_uri=record["source"], dst_path=work))
        path = fetched / MODEL_FILE if fetched.is_dir() else fetched
        actual = file_sha256(path)
        if actual != record["tags"][SHA256]:
            raise ModelIntegrityError(
                f"{store.model_name} version {number}: its model file has sha256 {actual[:12]}…, not the"
                f" {record['tags'][SHA256][:12]}… recorded when it was registered ({record['source']})"
            )
        model = joblib.load(path)
    if isinstance(model, YieldModel):
        return model
    return ContractModel(model, json.loads(record["tags"][CONTRACT]))


# --- the lifecycle's view ------------------------------------------------------------------------------


def last_day(store: Store) -> str | None:
    return store.client().get_registered_model(store.model_name).tags.get(LAST_DAY)


def validation_of(record: dict[str, Any]) -> dict[str, Any]:
    """A version's validation metrics (holdout auc, accuracy, brier), {} before it is validated."""
    return json.loads(record["tags"].get("validation", "{}"))


def candidate_day(store: Store, number: int, today: dt.date) -> dt.date:
    """The day a version is validated for: the day it was trained for (the nightly's), else the
    day after the newest lifecycle day (or `today`), fixed in its tags the first time it is asked."""
    tags = version(store, number)["tags"]
    if "trained_for" in tags or "candidate_day" in tags:
        return dt.date.fromisoformat(tags.get("trained_for") or tags["candidate_day"])
    with locked(store):
        last = last_day(store)
        day = dt.date.fromisoformat(last) + dt.timedelta(days=1) if last else today
        store.client().set_model_version_tag(store.model_name, str(number), "candidate_day", str(day))
    return day


def record_validation(store: Store, number: int, actions: list[dict[str, Any]]) -> None:
    """Record a version's validation (and its auto-approval) once: a rerun of the validation
    neither repeats it nor asks again for an approval already given. Lock held."""
    for action in actions:
        done = version(store, number)["tags"]
        if action["action"] == "validated" and "validation_decision" not in done:
            state = "awaiting_approval" if action["decision"] == "won" else "retired"
            tags = {"state": state, "validation_decision": action["decision"], "why": action["why"][:4000],
                    "validation": json.dumps(action["validation"], sort_keys=True),
                    "awaiting_since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}  # fmt: skip
            apply(store, Change(action, tags={number: tags}))
            _log_validation(store, number, action["validation"])
        elif action["action"] == "approve" and "approved_by" not in done:
            apply(store, Change(action, tags={number: {"state": "approved", "approved_by": action["by"]}}))


def _log_validation(store: Store, number: int, validation: Mapping[str, Any]) -> None:
    """The holdout metrics on the version's MLflow run too, beside its training parameters."""
    run_id = version(store, number)["run_id"]
    for key, value in sorted(validation.items()):
        if run_id and value is not None and np.isfinite(value):
            store.client().log_metric(run_id, f"holdout_{key}", float(value))


def decided(store: Store, number: int) -> bool:
    """Whether a person (or auto-approval) approved or rejected the version, or it left the
    queue otherwise (superseded, retired)."""
    return version(store, number)["state"] not in ("registered", "awaiting_approval")


def waited(store: Store, number: int, hours: float) -> bool:
    """Whether the version has waited for approval `hours` since its validation was recorded."""
    since = version(store, number)["tags"].get("awaiting_since")
    if since is None:
        return True
    return dt.datetime.now(dt.UTC) >= dt.datetime.fromisoformat(since) + dt.timedelta(hours=hours)


def actions_for(store: Store, day: str) -> list[dict[str, Any]]:
    """The events that take effect on `day`, in the order they were recorded."""
    return [e for e in history(store) if e.get("effective_day") == day and e["action"] in ACTIONS]


def mirror(store: Store, change: Change, day: str) -> bool:
    """Make the registry show a day's plan, unless this day or a later one already did (a
    backfill never moves the aliases backwards). Lock held. Whether it did."""
    last = last_day(store)
    if last is not None and day <= last:
        return False
    apply(store, replace(change, model_tags={**change.model_tags, LAST_DAY: day}))
    return True


def next_day(store: Store, today: dt.date) -> str:
    """The day a person's action takes effect: the day after the newest lifecycle day."""
    last = last_day(store)
    return str(dt.date.fromisoformat(last) + dt.timedelta(days=1) if last else today)


# --- people's actions ----------------------------------------------------------------------------------


def champions(store: Store) -> list[int]:
    """The champions in the order they took over, the current one last, as the recorded events
    set the champion alias: a rollback goes back to the one before, so it pops the newest (a
    promotion back to an earlier version pushes it again)."""
    stack: list[int] = []
    for event in history(store):
        number = event.get("aliases", {}).get(CHAMPION)
        if number is None or (stack and stack[-1] == number):
            continue
        rolled_back = event["action"] == "rollback" or any(
            h.get("action") == "rolled back" for h in event.get("happened", [])
        )
        if rolled_back and len(stack) > 1 and stack[-2] == number:
            stack.pop()
        else:
            stack.append(number)
    return stack


def previous_champion(store: Store) -> int | None:
    """The champion a rollback returns to (the one before the current champion), if any."""
    order, current = champions(store), aliases(store).get(CHAMPION)
    return order[-2] if len(order) > 1 and order[-1] == current else None
