"""What every workflow installs into luigi when it is imported, in one place: the event handlers
that time stages, keep the run history, alert failures and sweep leftovers, the Range look-back
check and the one-line report of a refused parameter. Installing twice changes nothing (luigi
keeps its handlers in sets)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import luigi

from jobs import files
from jobs.ops import alerts, history
from jobs.pipeline import locks, lookback, parameters, stages
from jobs.pipeline.settings import paths

logger = logging.getLogger("luigi-interface")
_swept: set[Path] = set()


def sweep_leftovers(*_: object) -> None:
    """Remove what killed runs left below the data root (hidden temporaries older than [paths]
    leftover_hours whose writer is gone), once per command and root: at the first event of its
    first task (scheduling, in the process that forks the workers, or its start). The landing
    zone is the testers'; its hidden names are not ours to judge."""
    settings = paths()
    root = settings.root_path()
    if root in _swept:
        return
    _swept.add(root)
    try:
        removed = files.sweep(root, settings.leftover_hours * 3600, skip=("landing",))
    except OSError as error:  # housekeeping must not stop a run
        logger.warning("leftovers below %s not swept: %s", root, error)
        return
    for path in removed:
        logger.info("removed %s, left behind by a run that was killed", path)


HANDLERS = (
    (luigi.Event.DEPENDENCY_DISCOVERED, sweep_leftovers),
    (luigi.Event.DEPENDENCY_PRESENT, sweep_leftovers),
    (luigi.Event.DEPENDENCY_MISSING, sweep_leftovers),
    (luigi.Event.START, sweep_leftovers),
    (luigi.Event.START, stages.note_start),  # the manifests' `seconds` start here
    (luigi.Event.START, history.record_start),
    (luigi.Event.SUCCESS, history.record_success),
    (luigi.Event.FAILURE, history.record_failure),
    (luigi.Event.FAILURE, alerts.alert_failure),
    (luigi.Event.PROCESS_FAILURE, alerts.alert_process_failure),
    (locks.SUSPENDED, history.record_suspended),
    (locks.DONE_ELSEWHERE, history.record_done_elsewhere),
)


def install() -> None:
    # luigi warns about None-valued parameters of its own Range tools (`--start` unset, `now`) on
    # every command: noise that hides the lines that matter.
    warnings.filterwarnings("ignore", message=r'Parameter ".*" with value "None"', category=UserWarning)
    # ... and about its own [core] default_scheduler_host/port, which it reads elsewhere
    warnings.filterwarnings(
        "ignore", message=r".*parameter 'default_scheduler_(host|port)'", category=UserWarning
    )
    for event, handler in HANDLERS:
        luigi.Task.event_handler(event)(handler)
    lookback.install()
    parameters.report_in_one_line()
    parameters.exact_options()
