"""The suite's one alert function: every workflow reports trouble through `alert`.

Each alert is appended to `{root}/alerts/alerts.jsonl` (one JSON object a line), and unless an
alert with the same key was sent within `[alerts] cooldown_minutes`, it is also mailed through
luigi's own `[email]` / `[smtp]` settings (to `[email] receiver`) and posted as JSON to
`[alerts] webhook_url` when one is set. A broken fab raises the same key hour after hour: it
is recorded every time but sent once per cooldown. Sending never fails the task: a mail server
or webhook that does not answer is logged. Neither does a full disk: the alert is logged and
sent all the same, without cooldown, and what could not be written is logged too.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import urllib.request
from pathlib import Path
from typing import Any

import luigi
import luigi.notifications

from jobs.files import json_line, json_text, read_json, write_json
from jobs.pipeline.settings import paths

SEVERITIES = ("info", "warning", "error", "critical")
logger = logging.getLogger("luigi-interface")


class alerts(luigi.Config):  # noqa: N801 - the luigi.cfg section
    webhook_url = luigi.Parameter(default="", description="POST each sent alert here as JSON; empty: none")
    cooldown_minutes = luigi.FloatParameter(default=60.0, description="an alert key is sent once per this")
    email_severity = luigi.ChoiceParameter(
        choices=SEVERITIES, default="warning", description="mail alerts of this severity and above"
    )


def alerts_file() -> Path:
    return paths().root_path() / "alerts" / "alerts.jsonl"


def alert(
    workflow: str, task: str, severity: str, message: str, key: str | None = None, **numbers: Any
) -> dict[str, Any]:
    """Record an alert, log it, and send it unless its key (default: the message) was sent
    within the cooldown. `numbers` are the figures behind it, kept as JSON."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, not {severity!r}")
    now = dt.datetime.now(dt.UTC)
    record = {
        "time": now.isoformat(timespec="seconds"),
        "workflow": workflow,
        "task": task,
        "severity": severity,
        "message": message,
        "key": key or f"{workflow}: {message}",
        "numbers": numbers,
    }
    logger.warning("ALERT [%s] %s %s: %s", severity, workflow, task, message)
    record["sent"] = _book(record, now)
    if record["sent"]:
        _send(record)
    return record


def _book(record: dict[str, Any], now: dt.datetime) -> bool:
    """Append the alert to alerts.jsonl and decide whether its key is out of its cooldown.

    On a full disk (or an unwritable folder) the alert still goes out, without the bookkeeping:
    a repeated mail is better than a silent failure. What could not be written is logged."""
    path, sent = alerts_file(), True
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as log:
            fcntl.flock(log, fcntl.LOCK_EX)  # whole lines and one cooldown decision, with several workers
            try:
                sent = _claim(record["key"], now)
            except OSError as error:
                logger.error("alert cooldown not recorded, sending without it: %s", error)
            _append_line(log.fileno(), json_line({**record, "sent": sent}))
    except OSError as error:
        logger.error("alert not written to %s: %s", path, error)
    return sent


def _append_line(fd: int, line: str) -> None:
    """One write of the whole line; a short one (the disk filled up) is taken back, so readers
    never meet half a line."""
    data, end = line.encode("utf-8"), os.fstat(fd).st_size
    if os.write(fd, data) < len(data):
        os.ftruncate(fd, end)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _claim(key: str, now: dt.datetime) -> bool:
    """Whether this key may be sent now; if so, note it (the caller holds the lock)."""
    state_file = alerts_file().with_name("last_sent.json")
    state = read_json(state_file) if state_file.exists() else {}
    last = state.get(key)
    if last and now - dt.datetime.fromisoformat(last) < dt.timedelta(minutes=alerts().cooldown_minutes):
        return False
    state[key] = now.isoformat()
    write_json(state_file, state)
    return True


def _send(record: dict[str, Any]) -> None:
    settings = alerts()
    email = luigi.notifications.email()
    if email.receiver and SEVERITIES.index(record["severity"]) >= SEVERITIES.index(settings.email_severity):
        subject = f"[{record['severity']}] {record['workflow']}: {record['message']}"[:200]
        body = json_text(record)
        luigi.notifications.send_email(subject, body, email.sender, (email.receiver,))
    if settings.webhook_url:
        request = urllib.request.Request(
            settings.webhook_url,
            data=json_line(record).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5):
                pass
        except OSError as error:  # an alert must never fail the task that raised it
            logger.error("alert webhook %s did not take the alert: %s", settings.webhook_url, error)


def alert_failure(task: luigi.Task, exception: BaseException) -> None:
    """Every failed task alerts; a task family failing day after day in a backfill mails once per
    cooldown (and is recorded every time)."""
    message = f"{task.task_family} failed: {type(exception).__name__}: {exception}"[:500]
    workflow = getattr(task, "workflow", "") or task.task_module
    alert(workflow, task.task_id, "error", message, key=f"failed {task.task_family}")


def alert_process_failure(task: luigi.Task, error: str) -> None:
    """The worker process running the task died (killed, out of memory)."""
    workflow = getattr(task, "workflow", "") or task.task_module
    message = f"{task.task_family}: {error}"[:500]
    alert(workflow, task.task_id, "error", message, key=f"failed {task.task_family}")


def read_alerts(path: Path | None = None) -> list[dict[str, Any]]:
    path = path or alerts_file()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
