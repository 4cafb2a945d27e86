"""Worker hosts: `python -m jobs.ops.workers run WORKFLOW` (scripts/worker) on each machine that helps.

One luigid, any number of worker hosts sharing the data root: each host runs the workflow's
scheduled Range (jobs/ops/schedules.py `run`, with its SLA checks and `finish` rounds) against
that luigid with `--workers N` luigi workers. luigid hands each task to one worker of all of
them and caps `[resources]` (one training at a time) across hosts; the task locks
(jobs/pipeline/locks.py) keep one writer per output even without it. See jobs/ops/README.md,
"More than one machine".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import luigi.configuration

from jobs.ops import schedules, sla
from jobs.ops.workflows import WORKFLOWS
from jobs.pipeline.settings import schedule


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/worker", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="action", required=True)
    run = commands.add_parser("run", help="run a workflow's scheduled Range with N workers on this host")
    run.add_argument("workflow", choices=sorted(n.replace("_", "-") for n in WORKFLOWS))
    run.add_argument("--workers", type=int, help=f"luigi workers here (default: [schedule] workers, "
                     f"{schedule().workers})")  # fmt: skip
    run.add_argument("--scheduler-host", help="luigid's host ([core] default_scheduler_host)")
    run.add_argument("--scheduler-port", type=int, help="luigid's port ([core] default_scheduler_port)")
    run.add_argument("--root", help="the shared data root ([paths] root)")
    run.add_argument("--now", type=sla.utc_time, help="as of this UTC time (ISO): redo a night")
    args, luigi_args = parser.parse_known_args(argv)  # the rest goes to luigi, as for scripts/schedule
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    config = luigi.configuration.get_config()
    if args.workers is not None:
        config.set("schedule", "workers", str(args.workers))
    if args.root:
        root = str(Path(args.root).expanduser().resolve())
        config.set("paths", "root", root)  # for the SLA checks and the completeness checks here
        luigi_args = ["--paths-root", root, *luigi_args]  # and for the luigi command
    forwarded = [f"--{name.replace('_', '-')}={value}" for name, value in
                 (("scheduler_host", args.scheduler_host), ("scheduler_port", args.scheduler_port),
                  ("now", args.now and args.now.isoformat())) if value is not None]  # fmt: skip
    return schedules.main(["run", args.workflow, *forwarded, "--", *luigi_args])


if __name__ == "__main__":
    sys.exit(main())
