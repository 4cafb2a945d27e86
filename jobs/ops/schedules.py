"""The schedules: what cron or systemd starts, and the command that installs them.

    python -m jobs.ops.schedules run wafer-yield|fab-merge|quality-monitor [--now ISO] [--local-scheduler]
        [--scheduler-host H] [--scheduler-port P] [--since ISO] [--alert] [more luigi options]
    python -m jobs.ops.schedules install|uninstall --cron|--systemd [--dry-run]
    python -m jobs.ops.schedules show --cron|--systemd

A scheduled run is a Range over the last `[schedule]` days/hours up to the period that just
ended, so a missed run (machine down, luigid down) is caught up by the next one, and a complete
period costs one completeness check. A command that ends with periods left (luigid restarted
under it, another command took its tasks) is run again, a few rounds at most (`finish`).
Each run checks the SLAs (`jobs/ops/sla.py`) before it starts and after it ends, and exits
with luigi's exit code (`[retcode]`): cron mails it, systemd records it. The crontab and the
systemd units live in `scripts/schedules/`; `@REPO@`, `@ROOT@` and `@LOGS@` in them are filled
in at install time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import luigi
import luigi.configuration
from luigi.retcodes import retcode

from jobs.ops import sla
from jobs.ops.luigid import DEFAULT_ADDRESS, DEFAULT_PORT, api_answers, base_url
from jobs.ops.workflows import WORKFLOWS, Workflow, workflow
from jobs.pipeline.settings import paths, schedule

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "scripts" / "schedules"
CRON_BEGIN, CRON_END = "# >>> stdf-jobs schedules >>>", "# <<< stdf-jobs schedules <<<"
EXIT_SCHEDULER_DOWN = 35  # [retcode] scheduling_error


# --- run --------------------------------------------------------------------------------------


def run(name: str, now: dt.datetime | None, local_scheduler: bool, luigi_args: list[str]) -> int:
    """One scheduled run: SLA check, the Range command (again while periods are left, see
    `finish`), SLA check; luigi's exit code. `now` replays a run as of that time (default: the clock)."""
    started = now or dt.datetime.now(dt.UTC)
    service = workflow(name)
    command = service.scheduled_command(started, schedule().workers)
    scheduler = None
    if local_scheduler:
        command.append("--local-scheduler")
    else:
        # the scheduler the luigi command will ask ([core] default_scheduler_host/port)
        config = luigi.configuration.get_config()
        host = config.get("core", "default_scheduler_host", DEFAULT_ADDRESS)
        port = config.getint("core", "default_scheduler_port", DEFAULT_PORT)
        if not api_answers(host, port):
            url = base_url(host, port)
            message = f"schedule {name}: luigid is not answering at {url} (scripts/luigid start)"
            print(message, file=sys.stderr)
            return EXIT_SCHEDULER_DOWN
        scheduler = (host, port)
    report_misses(started, replay=now is not None)
    code = finish(service, started, [*command, *luigi_args], scheduler)
    report_misses(now or dt.datetime.now(dt.UTC), replay=now is not None)
    print(f"schedule {name}: exit {code}: {EXIT_MEANINGS.get(code, 'see the log above')}", file=sys.stderr)
    return code


def finish(service: Workflow, now: dt.datetime, command: list[str], scheduler: tuple[str, int] | None) -> int:
    """Run the Range command until every period it covers is complete: at most `[schedule]
    rounds` commands, each after luigid answers again (within `scheduler_wait_seconds`).

    luigid keeps the tasks a command added in memory only (its state file is written when it
    stops cleanly), so one killed and restarted meanwhile no longer knows them, and the command
    ends with work left (exit 25, or 40 when it gave up asking). A command whose tasks another
    command finished ends with 25 or 20 too (see the README's exit codes). A new command is
    luigi's own way to resume: done periods cost one completeness check, the rest is added to
    the scheduler again. 0 once every period is complete, else the last command's exit code."""
    settings, codes = schedule(), retcode()
    resumable = {codes.already_running, codes.missing_data, codes.not_run, codes.unhandled_exception}
    for round_ in range(1, settings.rounds + 1):
        print(shown(command[1:]), flush=True)
        code = subprocess.call(command, cwd=REPO)
        left = [task for task in service.scheduled_summaries(now) if not task.complete()]
        if not left:
            return 0
        if code not in resumable or round_ == settings.rounds:
            return code
        print(f"schedule {service.name}: exit code {code} with {len(left)} period(s) left: "
              f"running the range again ({round_ + 1} of {settings.rounds})", flush=True)  # fmt: skip
        if scheduler and not answers_within(*scheduler, settings.scheduler_wait_seconds):
            print(f"schedule {service.name}: luigid did not answer at {base_url(*scheduler)} "
                  f"within {settings.scheduler_wait_seconds} s", file=sys.stderr)  # fmt: skip
            return code
    return code


def answers_within(host: str, port: int, seconds: float) -> bool:
    """Whether luigid answers within `seconds` (asked every second)."""
    deadline = time.monotonic() + seconds
    while not api_answers(host, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(1)
    return True


# What each exit code of a run means ([retcode] in luigi.cfg); the README's table says what to do.
EXIT_MEANINGS = {
    0: "done: every period is complete",
    10: "another command is running some of these tasks; the next run continues",
    20: "missing data: a fab has not delivered and its deadline has not passed, or the range "
    "is older than the look-back",
    25: "tasks not run by this command: another command finished them, or they are disabled after "
    "repeated failures ([scheduler] retry_count)",
    30: "a task failed: its error is in the log above and in alerts.jsonl",
    35: "scheduling error: a task's complete() or requires() raised, or the task limit was reached",
    40: "luigi's own error: the traceback is in the log above",
}
SLA_OPTIONS: dict[str, object] = {"since": None, "record_replay": False}  # from the command line


def report_misses(now: dt.datetime, replay: bool) -> None:
    """The SLA check, printing each new miss once; a replay records and alerts only with --alert."""
    since = SLA_OPTIONS["since"]
    sla.report(now, since, record=not replay or bool(SLA_OPTIONS["record_replay"]))


def shown(command: list[str]) -> str:
    """The command as printed: `--now` as a UTC time, not the epoch seconds luigi takes."""
    words = ["luigi", *command[2:]] if command[:2] == ["-m", "luigi"] else list(command)
    for i, word in enumerate(words[:-1]):
        if word == "--now" and words[i + 1].isdigit():
            words[i + 1] = f"{dt.datetime.fromtimestamp(int(words[i + 1]), dt.UTC):%Y-%m-%dT%H:%M}Z"
    return " ".join(words)


# --- install ----------------------------------------------------------------------------------


def render(text: str) -> str:
    root = paths().root_path()
    for placeholder, value in (("@REPO@", REPO), ("@LOGS@", root / "logs"), ("@ROOT@", root)):
        text = text.replace(placeholder, str(value))
    return text


def crontab_text() -> str:
    return render((TEMPLATES / "crontab").read_text())


def systemd_units() -> dict[str, str]:
    return {p.name: render(p.read_text()) for p in sorted((TEMPLATES / "systemd").iterdir())}


def merged_crontab(current: str, block: str | None) -> str:
    """The user's crontab with our block replaced (or removed when `block` is None)."""
    lines, inside = [], False
    for line in current.splitlines():
        if line.strip() == CRON_BEGIN:
            inside = True
        elif line.strip() == CRON_END:
            inside = False
        elif not inside:
            lines.append(line)
    if block is not None:
        lines += [CRON_BEGIN, block.rstrip("\n"), CRON_END]
    return "\n".join(lines).strip("\n") + "\n" if lines else ""


def install_cron(remove: bool, dry_run: bool) -> int:
    if shutil.which("crontab") is None:
        print("schedule: no crontab command here (install cron, or use --systemd)", file=sys.stderr)
        return 1
    listing = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    current = listing.stdout if listing.returncode == 0 else ""  # "no crontab for user": empty
    new = merged_crontab(current, None if remove else crontab_text())
    if dry_run:
        print(new, end="")
        return 0
    (paths().root_path() / "logs").mkdir(parents=True, exist_ok=True)
    subprocess.run(["crontab", "-"], input=new, text=True, check=True)
    print(f"crontab {'without' if remove else 'with'} the stdf-jobs schedules (crontab -l shows it)")
    return 0


def install_systemd(remove: bool, dry_run: bool) -> int:
    user = os.geteuid() != 0
    folder = Path.home() / ".config/systemd/user" if user else Path("/etc/systemd/system")
    systemctl = ["systemctl", "--user"] if user else ["systemctl"]
    units = systemd_units()
    timers = [name for name in units if name.endswith(".timer")]
    steps: list[list[str]] = []
    if remove:
        steps.append([*systemctl, "disable", "--now", *timers, "stdf-luigid.service"])
    else:
        steps.append([*systemctl, "daemon-reload"])
        steps.append([*systemctl, "enable", "--now", "stdf-luigid.service", *timers])
    if dry_run:
        for name in units:
            print(f"{'remove' if remove else 'write'} {folder / name}")
        for step in steps:
            print(" ".join(step))
        return 0
    if shutil.which("systemctl") is None:
        print("schedule: no systemctl here (no systemd; use --cron)", file=sys.stderr)
        return 1
    folder.mkdir(parents=True, exist_ok=True)
    (paths().root_path() / "logs").mkdir(parents=True, exist_ok=True)
    if not remove:
        for name, text in units.items():
            (folder / name).write_text(text)
    for step in steps:
        subprocess.run(step, check=True)
    if remove:
        for name in units:
            (folder / name).unlink(missing_ok=True)
    print(f"systemd units {'removed from' if remove else 'installed in'} {folder}")
    return 0


# --- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/schedule", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="action", required=True)
    run_parser = commands.add_parser("run", help="one scheduled run (what cron/systemd start)")
    run_parser.add_argument("workflow", choices=sorted(n.replace("_", "-") for n in WORKFLOWS))
    run_parser.add_argument("--now", type=sla.utc_time, help="as of this UTC time (ISO): redo a night")
    run_parser.add_argument("--local-scheduler", action="store_true", help="without luigid")
    run_parser.add_argument("--scheduler-host", help="luigid's host ([core] default_scheduler_host)")
    run_parser.add_argument(
        "--scheduler-port", type=int, help="luigid's port ([core] default_scheduler_port)"
    )
    run_parser.add_argument("--since", type=sla.utc_time, help="SLA: periods scheduled before are no misses")
    run_parser.add_argument(
        "--alert", action="store_true", help="a replay (--now) records and alerts SLA misses"
    )
    run_parser.add_argument(
        "luigi_args", nargs="*", help="more luigi options, e.g. --workers 4 (or after --)"
    )
    for action in ("install", "uninstall", "show"):
        sub = commands.add_parser(action, help=f"{action} the crontab or the systemd units")
        kind = sub.add_mutually_exclusive_group(required=True)
        kind.add_argument("--cron", action="store_true")
        kind.add_argument("--systemd", action="store_true")
        if action != "show":
            sub.add_argument("--dry-run", action="store_true", help="print what would change")
    args, unknown = parser.parse_known_args(argv)  # options in any order; the unknown go to luigi
    if args.action == "run":
        luigi_args = [a for a in [*args.luigi_args, *unknown] if a != "--"]
        return run(args.workflow, args.now, args.local_scheduler, [*scheduler_args(args), *luigi_args])
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.action == "show":
        print(crontab_text() if args.cron else "\n".join(f"# {n}\n{t}" for n, t in systemd_units().items()))
        return 0
    install = install_cron if args.cron else install_systemd
    code = install(remove=args.action == "uninstall", dry_run=args.dry_run)
    if code == 0 and args.action == "install" and not args.dry_run:
        sla.set_baseline(dt.datetime.now(dt.UTC), "schedules installed")
    return code


def scheduler_args(args: argparse.Namespace) -> list[str]:
    """--scheduler-host/--scheduler-port: set for the luigid check in run() and passed to luigi;
    the SLA options noted for report_misses; a real (not replayed) run starts the SLA baseline."""
    config = luigi.configuration.get_config()
    passed = []
    for option, key in (
        ("scheduler_host", "default_scheduler_host"),
        ("scheduler_port", "default_scheduler_port"),
    ):
        if getattr(args, option) is not None:
            config.set("core", key, str(getattr(args, option)))
            passed += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    SLA_OPTIONS.update(since=args.since, record_replay=args.alert)
    if args.now is None:
        sla.set_baseline(dt.datetime.now(dt.UTC), "first scheduled run")
    return passed


if __name__ == "__main__":
    sys.exit(main())
