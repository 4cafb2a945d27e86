"""What every workflow installs into luigi when it is imported, in one place: the event handlers
that time stages, keep the run history and alert failures, and the Range look-back check.
Installing twice changes nothing (luigi keeps its handlers in sets)."""

from __future__ import annotations

import warnings

import luigi

from jobs.ops import alerts, history
from jobs.pipeline import lookback, stages

HANDLERS = (
    (luigi.Event.START, stages.note_start),  # first: the manifests' `seconds` start here
    (luigi.Event.START, history.record_start),
    (luigi.Event.SUCCESS, history.record_success),
    (luigi.Event.FAILURE, history.record_failure),
    (luigi.Event.FAILURE, alerts.alert_failure),
    (luigi.Event.PROCESS_FAILURE, alerts.alert_process_failure),
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
