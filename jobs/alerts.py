"""The suite's one alert function: every workflow reports trouble through `alert`.

Alerts are appended to `{root}/alerts/alerts.jsonl`, one JSON object a line. The operations
work (email, webhook, cooldown) extends this function; callers do not change.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
from pathlib import Path
from typing import Any

from .config import paths

SEVERITIES = ("info", "warning", "error", "critical")
logger = logging.getLogger("luigi-interface")


def alerts_file() -> Path:
    return paths().root_path() / "alerts" / "alerts.jsonl"


def alert(workflow: str, task: str, severity: str, message: str, **numbers: Any) -> dict[str, Any]:
    """Record an alert (and log it). `numbers` are the figures behind it, kept as JSON."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, not {severity!r}")
    record = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "workflow": workflow,
        "task": task,
        "severity": severity,
        "message": message,
        "numbers": numbers,
    }
    path = alerts_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, default=str) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # whole lines even with several workers writing at once
        f.write(line)
    logger.warning("ALERT [%s] %s %s: %s", severity, workflow, task, message)
    return record


def read_alerts(path: Path | None = None) -> list[dict[str, Any]]:
    path = path or alerts_file()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
