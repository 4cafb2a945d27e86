"""The retrain-request queue between the workflows: the quality monitor writes a request when a key
parameter drifted (`{root}/requests/retrain/*.json`); the next wafer-yield deploy decision reads the
open ones and moves them to `done/`, with its date."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from jobs.files import read_json, write_json
from jobs.pipeline.settings import paths


def retrain_requests_dir() -> Path:
    return paths().root_path() / "requests" / "retrain"


def request_retrain(name: str, request: dict[str, Any]) -> Path:
    """Queue a retrain request as `{name}.json` (a request of the same name is replaced)."""
    path = retrain_requests_dir() / f"{name}.json"
    write_json(path, request)
    return path


def open_retrain_requests(date: dt.date) -> list[tuple[Path, dict[str, Any]]]:
    """Retrain requests (jobs/quality_monitor.py) from windows up to the end of `date`."""
    folder = retrain_requests_dir()
    found = [(p, read_json(p)) for p in sorted(folder.glob("*.json"))] if folder.exists() else []
    return [(p, r) for p, r in found if r["window"][:10] <= f"{date:%Y-%m-%d}"]


def consume(requests: list[tuple[Path, dict[str, Any]]], date: dt.date) -> None:
    """Requests a decision has taken into account move to `done/`, with the decision's date."""
    for path, request in requests:
        write_json(path.parent / "done" / path.name, {**request, "honoured_by": f"Deploy {date}"})
        path.unlink()
