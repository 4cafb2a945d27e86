"""The central scheduler: `python -m jobs.ops.luigid start|stop|status` (scripts/luigid) runs luigid.

Why: with `--local-scheduler` every command has its own scheduler, so two commands can run the
same task at once, nobody can watch a run, and nothing is remembered after it. One luigid on
127.0.0.1:8082 lets several commands and workers share the work (a task runs once however many
ask for it), serves the visualizer, and records every task's events in SQLite (luigi's
`[task_history]`, through SQLAlchemy). Its files live under the data root they describe:

    {root}/luigid/state.pickle          the scheduler's state across restarts (luigid --state-path)
    {root}/luigid/luigid.log            the server's log (its stdout and stderr)
    {root}/luigid/luigid.pid            the pid of the running server
    {root}/luigid/task_history.sqlite   tables tasks, task_events, task_parameters

`start` launches `python -m jobs.ops.luigid serve ...` in a session of its own (rather than
`luigid --background`, which needs python-daemon). That process sets `[scheduler]
record_task_history` and `[task_history] db_connection` for the root (the path depends on it, so
luigi.cfg cannot), replaces luigi 3.8.1's task-history schema upgrade, which SQLAlchemy 2 rejects
(spotify/luigi#3227: plain SQL strings), and then runs luigid itself.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import luigi.configuration

from jobs.files import pid_alive
from jobs.pipeline.settings import REPO_CONFIG, paths

DEFAULT_PORT = 8082
DEFAULT_ADDRESS = "127.0.0.1"
START_SECONDS = 30.0
STOP_SECONDS = 15.0
NOT_RUNNING = 3  # `status` exit code, as for init scripts


@dataclass(frozen=True)
class Layout:
    """Where one data root's luigid keeps its files."""

    root: Path

    @property
    def folder(self) -> Path:
        return self.root / "luigid"

    @property
    def state(self) -> Path:
        return self.folder / "state.pickle"

    @property
    def log(self) -> Path:
        return self.folder / "luigid.log"

    @property
    def pid(self) -> Path:
        return self.folder / "luigid.pid"

    @property
    def history(self) -> Path:
        return self.folder / "task_history.sqlite"


def base_url(address: str, port: int) -> str:
    host = "127.0.0.1" if address in ("", "0.0.0.0") else address
    return f"http://{host}:{port}"


def visualizer_url(address: str, port: int) -> str:
    return f"{base_url(address, port)}/static/visualiser/index.html"


# --- the running server ---------------------------------------------------------------------


def server_args(pid: int) -> list[str] | None:
    """The command line of `pid` if it is a live `jobs.ops.luigid serve` (not a zombie, nor a
    process that reused the pid); None otherwise."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: trust the pid
        return [] if pid_alive(pid) else None
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    return args if "jobs.ops.luigid" in args and "serve" in args else None


def running_pid(layout: Layout) -> int | None:
    """The pid of this root's luigid, if it runs."""
    try:
        pid = int(layout.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if server_args(pid) is not None else None


def option(args: list[str], name: str, default: str) -> str:
    """The value after `name` in a command line."""
    return args[args.index(name) + 1] if name in args[:-1] else default


def running_url(pid: int, address: str, port: int) -> str:
    """The visualizer of the server `pid`, from its own command line (it may run on another port
    than this command was given)."""
    args = server_args(pid) or []
    return visualizer_url(option(args, "--address", address), int(option(args, "--port", str(port))))


def api_answers(address: str, port: int, timeout: float = 2.0) -> bool:
    """Whether luigid's JSON API answers on address:port."""
    query = urllib.parse.urlencode({"data": json.dumps({"status": "RUNNING"})})
    try:
        with urllib.request.urlopen(f"{base_url(address, port)}/api/task_list?{query}", timeout=timeout) as r:
            return "response" in json.load(r)
    except (OSError, ValueError):
        return False


def cannot_listen(address: str, port: int) -> str | None:
    """Why luigid could not listen on address:port, or None (tornado binds with SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return f"{address}:{port} is already in use by another program; choose another --port"
            return f"cannot listen on {address}:{port}: {error.strerror or error}"
    return None


# --- commands -----------------------------------------------------------------------------------


def start(layout: Layout, address: str, port: int) -> int:
    pid = running_pid(layout)
    if pid is not None:
        print(f"luigid already running (pid {pid}): {running_url(pid, address, port)}")
        return 0
    problem = cannot_listen(address, port)
    if problem:
        print(f"luigid: {problem}", file=sys.stderr)
        return 1
    layout.folder.mkdir(parents=True, exist_ok=True)
    logged = layout.log.stat().st_size if layout.log.exists() else 0
    process = launch(layout, address, port)
    layout.pid.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            layout.pid.unlink(missing_ok=True)
            print(f"luigid: the server exited at start-up: {startup_error(layout.log, logged)} "
                  f"(see {layout.log})", file=sys.stderr)  # fmt: skip
            return 1
        if api_answers(address, port):
            print(f"luigid running (pid {process.pid}): {visualizer_url(address, port)}")
            return 0
        time.sleep(0.2)
    print(f"luigid: no answer on {base_url(address, port)} after {START_SECONDS:.0f} s (see {layout.log})",
          file=sys.stderr)  # fmt: skip
    return 1


def launch(layout: Layout, address: str, port: int) -> subprocess.Popen:
    """`python -m jobs.ops.luigid serve` detached from this terminal, logging to luigid.log."""
    command = [sys.executable, "-m", "jobs.ops.luigid", "serve", "--root", str(layout.root),
               "--address", address, "--port", str(port)]  # fmt: skip
    with open(layout.log, "ab") as log:
        return subprocess.Popen(
            command,
            cwd=REPO_CONFIG.parent,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def startup_error(log: Path, offset: int) -> str:
    """The exception line of what this start wrote to the log after `offset` (else its last line)."""
    with open(log, "rb") as f:
        f.seek(offset)
        lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"[\w.]+(Error|Exception)\b", line)]
    return (errors or lines or ["no output"])[-1]


def stop(layout: Layout) -> int:
    pid = running_pid(layout)
    if pid is None:
        layout.pid.unlink(missing_ok=True)
        print("luigid is not running")
        return 0
    os.kill(pid, signal.SIGTERM)  # luigid saves its state on SIGTERM
    deadline = time.monotonic() + STOP_SECONDS
    while server_args(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if server_args(pid) is not None:
        os.kill(pid, signal.SIGKILL)
        print(f"luigid (pid {pid}) did not stop in {STOP_SECONDS:.0f} s; killed it", file=sys.stderr)
    layout.pid.unlink(missing_ok=True)
    print(f"luigid stopped (pid {pid})")
    return 0


def status(layout: Layout, address: str, port: int) -> int:
    pid = running_pid(layout)
    if pid is None:
        print("luigid is not running")
    else:
        print(f"luigid running (pid {pid}): {running_url(pid, address, port)}")
    print(f"  state:   {layout.state}\n  history: {layout.history}\n  log:     {layout.log}")
    return 0 if pid is not None else NOT_RUNNING


# --- the server process -----------------------------------------------------------------------


def serve(layout: Layout, address: str, port: int) -> None:
    """Run luigid in this process with task history in `layout.history` (what `start` launches)."""
    import luigi.cmdline
    import luigi.configuration
    import luigi.db_task_history

    config = luigi.configuration.get_config()
    config.set("scheduler", "record_task_history", "true")
    config.set("task_history", "db_connection", f"sqlite:///{layout.history}")
    luigi.db_task_history._upgrade_schema = upgrade_task_history_schema
    luigi.cmdline.luigid(["--address", address, "--port", str(port), "--state-path", str(layout.state)])


def upgrade_task_history_schema(engine: object) -> None:
    """luigi's `_upgrade_schema` the SQLAlchemy 2 way: add `tasks.task_id` to a database made by
    luigi before 2.x. (Its other step only changes column types on MySQL, Oracle, MS SQL and
    PostgreSQL; a SQLite database from luigi itself already has them.)"""
    import sqlalchemy

    if "task_id" in {c["name"] for c in sqlalchemy.inspect(engine).get_columns("tasks")}:
        return
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("ALTER TABLE tasks ADD COLUMN task_id VARCHAR(200)"))
        connection.execute(sqlalchemy.text("CREATE INDEX ix_task_id ON tasks (task_id)"))


# --- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/luigid", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["start", "stop", "status", "serve"],
                        help="serve: run luigid in the foreground (what start launches)")  # fmt: skip
    # the port luigi commands ask ([core] default_scheduler_port), so the two agree by default
    port = luigi.configuration.get_config().getint("core", "default_scheduler_port", DEFAULT_PORT)
    parser.add_argument(
        "--port", type=int, default=port, help=f"default: [core] default_scheduler_port, {port}"
    )
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help="listening address (default: 127.0.0.1)")
    parser.add_argument("--root", help="data root (default: [paths] root in luigi.cfg)")
    args = parser.parse_args(argv)
    layout = Layout(Path(args.root).resolve() if args.root else paths().root_path())
    try:
        if args.command == "serve":
            serve(layout, args.address, args.port)
            return 0
        if args.command == "start":
            return start(layout, args.address, args.port)
        if args.command == "stop":
            return stop(layout)
        return status(layout, args.address, args.port)
    except OSError as error:  # e.g. a data root that cannot be written
        print(f"luigid: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
