"""Shared settings: luigi.Config sections read from the repo's luigi.cfg (or LUIGI_CONFIG_PATH)."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import luigi
import luigi.configuration

from jobs.domain.lifecycle import LifecycleRules
from jobs.domain.model import ModelParams
from jobs.domain.registry import Store, local_store
from jobs.stdf.plausibility import Plausibility
from jobs.stdf.scratch import Scratch

REPO_CONFIG = Path(__file__).resolve().parents[2] / "luigi.cfg"

# Luigi reads ./luigi.cfg from the working directory; make the repo's file apply from anywhere
# too, unless the user points LUIGI_CONFIG_PATH at a file of their own.
if REPO_CONFIG.exists() and "LUIGI_CONFIG_PATH" not in os.environ:
    luigi.configuration.add_config_path(str(REPO_CONFIG))


def comma_list(value: str) -> list[str]:
    """A comma-separated luigi.cfg value as a list, blanks dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


def repo_file(value: str) -> Path:
    """A path from luigi.cfg: relative ones are taken from the repo."""
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else REPO_CONFIG.parent / path


class paths(luigi.Config):  # noqa: N801 - section names are luigi.cfg's
    root = luigi.Parameter(default="data", description="Data root; relative paths are taken from the repo")
    leftover_hours = luigi.FloatParameter(
        default=24.0, description="temporaries of killed runs older than this are removed by the next command"
    )

    def root_path(self) -> Path:
        root = Path(os.path.expanduser(self.root))
        return root if root.is_absolute() else REPO_CONFIG.parent / root


class plausible_dates(luigi.Config):  # noqa: N801
    """The dates, hours and windows a command line may name (jobs/pipeline/parameters.py)."""

    first = luigi.DateParameter(default=dt.date(2000, 1, 1), description="no earlier date is taken")
    days_ahead = luigi.IntParameter(default=2, description="nor one later than today (UTC) plus this")

    def span(self) -> tuple[dt.date, dt.date]:
        return self.first, dt.datetime.now(dt.UTC).date() + dt.timedelta(days=self.days_ahead)


class stdf(luigi.Config):  # noqa: N801
    engine = luigi.ChoiceParameter(choices=["arrow", "pystdf"], default="arrow")
    batch_size = luigi.IntParameter(default=0)
    compression = luigi.Parameter(default="zstd")
    # implausible content is refused as unreadable (defaults: jobs/stdf/plausibility.py)
    max_bytes_without_parts = luigi.IntParameter(default=Plausibility.max_bytes_without_parts)
    max_unknown_share = luigi.FloatParameter(default=Plausibility.max_unknown_share)
    # a compressed file is decompressed once into a plain copy here (defaults: jobs/stdf/scratch.py)
    scratch_dir = luigi.Parameter(default=Scratch.folder)
    scratch_max_bytes = luigi.IntParameter(default=Scratch.max_bytes)

    def plausibility(self) -> Plausibility:
        return Plausibility(self.max_bytes_without_parts, self.max_unknown_share)

    def scratch(self) -> Scratch:
        return Scratch(self.scratch_dir, self.scratch_max_bytes)


class backoff(luigi.Config):  # noqa: N801 - the luigi.cfg section
    attempts = luigi.IntParameter(default=6, description="tries of a transient operation, the first included")
    initial_seconds = luigi.FloatParameter(default=2.0, description="the first wait; each next one doubles")
    max_seconds = luigi.FloatParameter(default=60.0, description="the longest single wait")
    jitter_seconds = luigi.FloatParameter(default=1.0, description="random extra on each wait, up to this")
    settle_seconds = luigi.FloatParameter(
        default=30.0, description="a landed file modified less than this ago may still be being written"
    )


class versions(luigi.Config):  # noqa: N801
    """Stage versions; see jobs/pipeline/stages.py for how they appear in output paths."""

    convert = luigi.IntParameter(default=2)
    ingest = luigi.IntParameter(default=2)
    quality = luigi.IntParameter(default=1)
    features = luigi.IntParameter(default=1)
    train = luigi.IntParameter(default=2)
    deploy = luigi.IntParameter(default=2)
    candidate = luigi.IntParameter(default=1)
    lifecycle = luigi.IntParameter(default=1)
    score = luigi.IntParameter(default=2)
    report = luigi.IntParameter(default=1)
    daily = luigi.IntParameter(default=1)
    fab_hour = luigi.IntParameter(default=1)
    reference = luigi.IntParameter(default=1)
    normalize = luigi.IntParameter(default=1)
    feature_store = luigi.IntParameter(default=1)
    merge = luigi.IntParameter(default=1)
    monitor_reference = luigi.IntParameter(default=1)
    monitor = luigi.IntParameter(default=1)


class wafer_yield(luigi.Config):  # noqa: N801
    """The daily wafer-yield workflow (jobs/wafer_yield.py)."""

    fabs = luigi.Parameter(default="fab1,fab2,fab3", description="comma-separated fab names")
    landing_deadline_hours = luigi.FloatParameter(
        default=4.0, description="hours after a day ends (UTC) until a fab without _READY counts as offline"
    )
    min_devices = luigi.IntParameter(default=10000, description="fewer new devices skip training")
    train_window_days = luigi.IntParameter(default=14)
    backtest_days = luigi.IntParameter(default=30)
    auc_margin = luigi.FloatParameter(default=0.002, description="a candidate must beat the champion by this")
    min_accuracy = luigi.FloatParameter(default=0.90)
    min_forecast_yield = luigi.FloatParameter(default=0.85, description="wafer forecasts below it alert")

    def fab_list(self) -> list[str]:
        return comma_list(self.fabs)


class merge(luigi.Config):  # noqa: N801
    """The hourly fab-merge workflow (jobs/fab_merge.py). Named [merge], not [fab_merge]: its
    command-line options (--merge-fabs ...) must not start with --fab, a task parameter."""

    fabs = luigi.Parameter(default="fab1,fab2,fab3", description="comma-separated fab names")
    deadline_hours = luigi.FloatParameter(
        default=2.0, description="hours after an hour ends until the merge goes on without a missing fab"
    )
    reference_days = luigi.IntParameter(default=7, description="days before the hour's day that z-scores use")
    test_names = luigi.Parameter(default="jobs/reference/test_names.csv", description="relative to the repo")
    clock_corrections = luigi.Parameter(
        default="jobs/reference/clock_corrections.csv", description="relative to the repo"
    )

    def fab_list(self) -> list[str]:
        return comma_list(self.fabs)


class quality_monitor(luigi.Config):  # noqa: N801
    """The 15-minute quality monitor (jobs/quality_monitor.py)."""

    fabs = luigi.Parameter(default="fab1,fab2,fab3", description="comma-separated fab names")
    window_minutes = luigi.IntParameter(default=15)
    reference_days = luigi.IntParameter(default=7, description="days before a window's day: the reference")
    key_tests = luigi.Parameter(default="VTH_N_PM1,IDDQ_V1,FMAX_RO1", description="tests watched for drift")
    psi_limit = luigi.FloatParameter(default=0.25, description="PSI above it: drift alert, retrain request")
    lot_sigmas = luigi.FloatParameter(default=4.0, description="and the median beyond the lots' spread")
    ks_alpha = luigi.FloatParameter(default=0.01)
    yield_floor = luigi.FloatParameter(default=0.5, description="window wafer-sort yield below it alerts")
    physical_bounds = luigi.Parameter(
        default="jobs/reference/physical_bounds.csv", description="relative to the repo"
    )

    def fab_list(self) -> list[str]:
        return comma_list(self.fabs)

    def key_test_list(self) -> list[str]:
        return comma_list(self.key_tests)


class models(luigi.Config):  # noqa: N801
    """The model registry and lifecycle (jobs/domain/registry.py, jobs/domain/lifecycle.py)."""

    tracking_uri = luigi.Parameter(
        default="", description="MLflow tracking/registry URI; empty: SQLite + files under {root}/registry"
    )
    registered_model = luigi.Parameter(
        default="wafer_yield_PMX7", description="one registered model per product"
    )
    auto_approve = luigi.BoolParameter(
        default=False, description="approve winning candidates without a person"
    )
    approval_wait_hours = luigi.FloatParameter(
        default=2.0, description="how long a run waits (pending) for an approval before it ends without"
    )
    replay_days = luigi.IntParameter(default=7, description="scored days a candidate is replayed on")
    replay_auc_tolerance = luigi.FloatParameter(default=0.01)
    live_auc_tolerance = luigi.FloatParameter(default=0.01)
    min_live_dies = luigi.IntParameter(default=2000)
    rollback_accuracy_drop = luigi.FloatParameter(default=0.05)
    rollback_auc_drop = luigi.FloatParameter(default=0.05)
    live_days = luigi.IntParameter(
        default=7, description="days of predictions that newly landed labels are matched to"
    )

    def model_name(self) -> str:
        """[models] registered_model, checked: it names folders below the data root too."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.registered_model):
            raise ValueError(
                f"[models] registered_model {self.registered_model!r}: letters, digits, _ . - only"
            )
        return self.registered_model

    def store(self) -> Store:
        """The registry of this data root: [models] tracking_uri, or the embedded local store."""
        root = paths().root_path()
        lock = root / "locks" / "registry.lock"
        if self.tracking_uri:
            return Store(self.tracking_uri, self.model_name(), lock)
        return local_store(root / "registry", self.model_name(), lock)

    def rules(self, settings: wafer_yield) -> LifecycleRules:
        return LifecycleRules(
            auc_margin=settings.auc_margin,
            min_accuracy=settings.min_accuracy,
            replay_auc_tolerance=self.replay_auc_tolerance,
            live_auc_tolerance=self.live_auc_tolerance,
            min_live_dies=self.min_live_dies,
            rollback_accuracy_drop=self.rollback_accuracy_drop,
            rollback_auc_drop=self.rollback_auc_drop,
        )


class yield_model_settings(luigi.Config):  # noqa: N801
    """The yield model's training settings, luigi.cfg's [yield_model] (jobs/domain/model.py ModelParams)."""

    @classmethod
    def get_task_family(cls) -> str:
        return "yield_model"

    seed = luigi.IntParameter(default=7)
    top_tests = luigi.IntParameter(default=8, description="parametric tests selected as features")
    n_estimators = luigi.IntParameter(default=100)
    max_depth = luigi.IntParameter(default=12, description="0: unlimited")
    min_samples_leaf = luigi.IntParameter(default=30)
    max_samples = luigi.FloatParameter(
        default=16000, description="rows each tree is grown on: a count above 1, a share up to 1, 0: all"
    )
    n_jobs = luigi.IntParameter(default=2)

    def model_params(self) -> ModelParams:
        """These settings as the model's training parameters."""
        return ModelParams(
            seed=self.seed,
            k_tests=self.top_tests,
            n_estimators=self.n_estimators,
            max_depth=self.max_depth or None,
            min_samples_leaf=self.min_samples_leaf,
            max_samples=self.max_samples or None,
            n_jobs=self.n_jobs,
        )

    group_readable = luigi.BoolParameter(
        default=False, description="model folders and the registry readable by the group, whatever the umask"
    )


class quality_gate(luigi.Config):  # noqa: N801
    """Thresholds of the daily quality gate (jobs/domain/quality.py)."""

    min_completeness = luigi.FloatParameter(
        default=0.98, description="share of passing dies that ran every catalogue test"
    )
    max_duplicate_die_share = luigi.FloatParameter(
        default=0.001, description="dies tested twice outside retests, as a share of all dies"
    )
    max_nonfinite_share = luigi.FloatParameter(default=0.001, description="NaN/inf parametric results")
    max_abs_coord = luigi.IntParameter(default=500, description="die coordinates beyond it are implausible")
    max_test_time_ms = luigi.IntParameter(default=600000)


class sla(luigi.Config):  # noqa: N801 - the luigi.cfg section
    wafer_yield_start = luigi.Parameter(default="02:00", description="UTC time of the day's run, next day")
    wafer_yield_hours = luigi.FloatParameter(default=4.0, description="hours it may take")
    fab_merge_hours = luigi.FloatParameter(default=2.0, description="hours after the hour ends")
    quality_monitor_minutes = luigi.FloatParameter(default=15.0, description="minutes after the window ends")
    lookback_hours = luigi.FloatParameter(default=48.0, description="deadlines checked, back from now")
    workflows = luigi.Parameter(
        default="wafer_yield,fab_merge,quality_monitor", description="the workflows this site schedules"
    )


class schedule(luigi.Config):  # noqa: N801 - the luigi.cfg section
    wafer_yield_days = luigi.IntParameter(default=14, description="days each nightly run looks back")
    fab_merge_hours = luigi.IntParameter(default=48, description="hours each hourly run looks back")
    quality_monitor_hours = luigi.IntParameter(default=6, description="hours each monitor run looks back")
    workers = luigi.IntParameter(default=2, description="luigi workers of a scheduled run")
    rounds = luigi.IntParameter(default=3, description="luigi commands a scheduled run may take to finish")
    scheduler_wait_seconds = luigi.IntParameter(
        default=300, description="how long a scheduled run waits for luigid to answer again between rounds"
    )
