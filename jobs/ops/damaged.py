"""The damaged-file policy applied (jobs/domain/damage.py decides; this moves files and alerts).

    sort_landed(workflow, task, fab, landed)  -> (readable, quarantined)
    flag_truncated(workflow, task, landed)    the alerts alone (the monitor quarantines by its checks)

Every workflow passes the files it converted through here: unreadable ones are quarantined with
their reason (never deleted) and alert; truncated ones stay in the data with their complete parts
and alert once per file (the key is the content's sha256, so the workflows that read the same
file raise one alert per cooldown), saying how many parts were lost.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from jobs.domain import damage
from jobs.ops.alerts import alert
from jobs.ops.quarantine import quarantine_file


def sort_landed(
    workflow: str, task: str, fab: str, landed: list[tuple[Path, dict[str, Any]]]
) -> tuple[list[tuple[Path, dict[str, Any]]], list[dict[str, Any]]]:
    """(path, ConvertFile manifest) pairs -> the readable pairs (whole or truncated) and the
    quarantined files, each with its reason and where it was moved."""
    readable, quarantined = [], []
    flag_truncated(workflow, task, landed)
    for path, conversion in landed:
        note = damage.damage_note(conversion)
        if note["verdict"] != "unreadable":
            readable.append((path, conversion))
            continue
        reason = {"check": "unreadable", "error": note["reason"], "byte_offset": note["byte_offset"]}
        moved = quarantine_file(path, workflow, fab, landing_date(path), reason)
        quarantined.append({"file": path.name, "moved_to": str(moved), **reason})
        message = f"quarantined {note['reason']}"
        alert(workflow, task, "warning", message, key=f"quarantine {fab}", file=str(moved))
    return readable, quarantined


def flag_truncated(workflow: str, task: str, landed: list[tuple[Path, dict[str, Any]]]) -> None:
    """Alert for each truncated file: where it was cut, the complete parts kept and those lost."""
    for path, conversion in landed:
        note = damage.damage_note(conversion)
        if note["verdict"] == "truncated":
            alert(workflow, task, "warning", f"{path.name} {damage.describe(note)}",
                  key=f"truncated {conversion['input']['sha256']}", file=str(path), **note)  # fmt: skip


def landing_date(path: Path) -> dt.date:
    """The landing day of a landed file: its folder, `landing/{fab}/{date}/`."""
    return dt.date.fromisoformat(path.parent.name)
