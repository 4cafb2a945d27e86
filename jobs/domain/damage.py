"""One policy for damaged STDF files, the same in every workflow (the table in jobs/stdf/README.md).

    verdict(conversion)       -> "unreadable" | "truncated" | "ok"  (a ConvertFile manifest)
    damage_note(conversion)   -> what the manifests, reports and alerts say about one file
    check_damage(name, conv)  -> a warning Check: truncation (parts kept, parts lost) and structure
    estimated_finish(facts, parts) -> the end of testing, estimated where truncation lost it

Unreadable files are quarantined with their reason; a truncated file's complete parts are used by
every workflow, and the file is flagged, never quarantined; a byte-identical resend is read once.
The workflows apply it through jobs/ops/damaged.py; nothing here moves files.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from jobs.domain.quality import Check

STRUCTURE_NOTES = ("parts_without_pir", "results_before_pir", "results_never_closed", "pirs_never_closed")


def verdict(conversion: dict[str, Any]) -> str:
    if conversion.get("status", "ok") != "ok":
        return "unreadable"
    return "truncated" if conversion.get("truncated") else "ok"


def damage_note(conversion: dict[str, Any]) -> dict[str, Any]:
    """The file's verdict with its figures: the reason (unreadable), or where it was cut and how
    many parts were kept and lost (truncated), and the structure notes of the normalizer."""
    note: dict[str, Any] = {"verdict": verdict(conversion)}
    if note["verdict"] == "unreadable":
        return {**note, "reason": conversion.get("error"), "byte_offset": conversion.get("byte_offset")}
    structure = conversion.get("structure", {})
    if note["verdict"] == "truncated":
        note.update(
            truncated_at=conversion["file"].get("truncated_at"),
            parts_kept=conversion["rows"]["parts"],
            parts_lost=structure.get("parts_lost", conversion["file"].get("open_parts_dropped", 0)),
        )
    notes = {k: structure[k] for k in STRUCTURE_NOTES if structure.get(k)}
    return {**note, "structure": notes} if notes else note


def describe(note: dict[str, Any]) -> str:
    """One line for an alert or a report."""
    if note["verdict"] == "unreadable":
        return f"unreadable: {note['reason']}"
    parts = []
    if note["verdict"] == "truncated":
        parts.append(
            f"truncated at byte {note['truncated_at']}: {note['parts_kept']} complete parts kept, "
            f"{note['parts_lost']} lost"
        )
    parts += [f"{v} {k.replace('_', ' ')}" for k, v in note.get("structure", {}).items()]
    return "; ".join(parts) or "read whole"


def check_damage(name: str, conversion: dict[str, Any]) -> Check:
    """A truncated file or an unusual part structure warns (the data is used); never an error."""
    note = damage_note(conversion)
    sound = note["verdict"] == "ok" and not note.get("structure")
    return Check(f"{name}: damage and structure", sound, "warning", describe(note), note)


def estimated_finish(facts: dict[str, Any], parts: pd.DataFrame) -> str | None:
    """The recorded end of testing, or for a file whose end was lost (truncated: no WRR, no MRR)
    an estimate: the start plus the parts' test times, the head/sites running side by side."""
    if facts.get("finish_time_utc") or not facts.get("start_time_utc"):
        return facts.get("finish_time_utc")
    sites = max(len(parts[["head_num", "site_num"]].drop_duplicates()), 1) if len(parts) else 1
    seconds = float(parts["test_time_ms"].fillna(0).sum()) / 1000 / sites if len(parts) else 0.0
    finish = pd.Timestamp(facts["start_time_utc"]) + pd.Timedelta(seconds=seconds)
    return finish.strftime("%Y-%m-%dT%H:%M:%SZ")
