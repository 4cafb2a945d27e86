"""People's view of and actions on the model registry (jobs/domain/registry.py):

    scripts/models list                                    every version: state, aliases, rollout share,
                                                           day, validation AUC/accuracy, approval
    scripts/models show VERSION                            everything of a version (JSON)
    scripts/models history                                 the registry's events, oldest first
    scripts/models approve VERSION --by NAME [--note TEXT] a version awaiting approval
    scripts/models reject VERSION --by NAME [--note TEXT]  a version awaiting approval, approved or
                                                           rolling out (no longer the challenger)
    scripts/models promote VERSION --by NAME [--note TEXT] make it the champion (a recorded override)
    scripts/models rollback --by NAME [--note TEXT]        back to the champion before the current one

An action changes the registry at once (aliases, states) and records an event that takes effect
on the lifecycle's next day (registry.next_day), when Lifecycle applies it to that day's plan.
A refused action prints one line naming the version and why (exit 2); a registry that cannot be
reached, one line (exit 1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jobs.domain import registry
from jobs.domain.model import ModelIntegrityError
from jobs.domain.registry import CHALLENGER, CHAMPION, Change, RegistryError, Store
from jobs.pipeline.settings import models, paths

REJECTABLE = ("awaiting_approval", "approved", "rolling_out")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _event(store: Store, action: str, number: int, by: str, note: str, today: dt.date | None) -> dict:
    """A person's event; it takes effect on the lifecycle's next day."""
    day = registry.next_day(store, today or _today())
    return {"action": action, "version": number, "by": by, "note": note, "effective_day": day}


def _require_state(record: dict[str, Any], allowed: Sequence[str]) -> None:
    if record["state"] not in allowed:
        names = [s.replace("_", " ") for s in allowed]
        wanted = " or ".join(filter(None, [", ".join(names[:-1]), names[-1]]))
        raise RegistryError(f"version {record['version']} is {record['state']}, not {wanted}")


# --- the actions ---------------------------------------------------------------------------------


def approve(store: Store, number: int, by: str, note: str = "", today: dt.date | None = None) -> dict:
    """Approve a version awaiting approval; returns the recorded event."""
    with registry.locked(store):
        _require_state(registry.version(store, number), ("awaiting_approval",))
        tags = {"state": "approved", "approved_by": by, "approval_note": note, "approved_at": _now()}
        event = _event(store, "approve", number, by, note, today)
        return registry.apply(store, Change(event, tags={number: tags}))


def reject(store: Store, number: int, by: str, note: str = "", today: dt.date | None = None) -> dict:
    """Reject a version awaiting approval, approved or rolling out; it stops being the challenger."""
    with registry.locked(store):
        _require_state(registry.version(store, number), REJECTABLE)
        tags = {"state": "rejected", "rejected_by": by, "rejection_note": note, "rejected_at": _now()}
        challenger = {CHALLENGER: None} if registry.aliases(store).get(CHALLENGER) == number else {}
        event = _event(store, "reject", number, by, note, today)
        return registry.apply(store, Change(event, challenger, {number: tags}))


def promote(
    store: Store,
    number: int,
    by: str,
    note: str = "",
    today: dt.date | None = None,
    scratch: Path | None = None,
) -> dict:
    """Make a version the champion now (a manual override, recorded): only one whose model file
    matches its recorded sha256 and that has a feature contract; the old champion is replaced."""
    with registry.locked(store):
        record = registry.version(store, number)
        current = registry.aliases(store)
        if current.get(CHAMPION) == number:
            raise RegistryError(f"version {number} is the champion already")
        registry.load(store, number, scratch or Path(tempfile.gettempdir()))  # refuses a changed file
        tags = {number: {"state": "champion", "rollout_share": "1.0", "promoted_by": by,
                         "promotion_note": note, "promoted_at": _now()}}  # fmt: skip
        if CHAMPION in current:
            tags[current[CHAMPION]] = {"state": "replaced"}
        aliases = {CHAMPION: number, **({CHALLENGER: None} if current.get(CHALLENGER) == number else {})}
        event = {
            **_event(store, "promote", number, by, note, today),
            "validation": registry.validation_of(record),
        }
        return registry.apply(store, Change(event, aliases, tags))


def rollback(store: Store, by: str, note: str = "", today: dt.date | None = None) -> dict:
    """Give the champion alias back to the champion before the current one."""
    with registry.locked(store):
        current = registry.aliases(store).get(CHAMPION)
        if current is None:
            raise RegistryError("there is no champion to roll back")
        previous = registry.previous_champion(store)
        if previous is None:
            raise RegistryError(
                f"version {current} is the champion and there is no earlier champion to go back to"
            )
        tags = {
            current: {
                "state": "rolled_back",
                "rolled_back_by": by,
                "rollback_note": note,
                "rolled_back_at": _now(),
            },
            previous: {"state": "champion", "rollout_share": "1.0"},
        }
        event = {**_event(store, "rollback", current, by, note, today), "to": previous}
        return registry.apply(store, Change(event, {CHAMPION: previous}, tags))


# --- what the registry holds, as text --------------------------------------------------------------

COLUMNS = ("version", "state", "aliases", "share", "day", "auc", "accuracy", "approved_by")


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def version_row(record: dict[str, Any]) -> tuple[str, ...]:
    tags, validation = record["tags"], registry.validation_of(record)
    return (
        str(record["version"]),
        record["state"],
        ",".join(sorted(record["aliases"])) or "-",
        tags.get("rollout_share", "-"),
        tags.get("trained_for") or tags.get("candidate_day") or "-",
        _number(validation.get("auc")),
        _number(validation.get("accuracy")),
        tags.get("approved_by", "-"),
    )


def version_table(records: Sequence[dict[str, Any]]) -> list[str]:
    """A header and one line per version, in aligned columns."""
    rows = [COLUMNS, *(version_row(r) for r in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def version_details(store: Store, number: int) -> dict[str, Any]:
    """A version's record with its JSON-valued tags decoded, and its MLflow run's params and metrics."""
    record = registry.version(store, number)
    record["tags"] = {k: _decoded(v) for k, v in sorted(record["tags"].items())}
    if record["run_id"]:
        data = store.client().get_run(record["run_id"]).data
        record["run"] = {
            "params": dict(sorted(data.params.items())),
            "metrics": dict(sorted(data.metrics.items())),
        }
    return record


def _decoded(value: str) -> Any:
    if value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def _happening(entry: dict[str, Any]) -> str:
    text = entry["action"] + (f" v{entry['version']}" if entry.get("version") is not None else "")
    if entry.get("to") is not None:
        text += f" -> v{entry['to']}"
    if entry.get("share"):
        text += f" {entry['share']:.0%}"
    return text


def event_line(event: dict[str, Any]) -> str:
    """number, effective day, action, version, by whom, why."""
    day = event.get("effective_day") or event.get("day") or "-"
    version = _happening({"action": "", "version": event.get("version"), "to": event.get("to")}).strip()
    if event["action"] == "day":
        why = "; ".join(_happening(h) for h in event.get("happened", [])) or "no change"
    else:
        why = ": ".join(filter(None, [event.get("decision"), event.get("why") or event.get("note")]))
    by = f"by {event['by']}" if event.get("by") else ""
    cells = [f"{event['number']:>4}", f"{day:<10}", f"{event['action']:<9}", f"{version or '-':<10}", by, why]
    return "  ".join(c for c in cells if c)


# --- the command line --------------------------------------------------------------------------------


def _list(store: Store, args: argparse.Namespace) -> None:
    print("\n".join(version_table(registry.versions(store))))


def _show(store: Store, args: argparse.Namespace) -> None:
    print(json.dumps(version_details(store, args.version), indent=2, sort_keys=True))


def _history(store: Store, args: argparse.Namespace) -> None:
    for event in registry.history(store):
        print(event_line(event))


def _acted(event: dict[str, Any]) -> None:
    print(f"recorded: {event_line(event)}")


ACTIONS: dict[str, Callable[[Store, argparse.Namespace], None]] = {
    "list": _list,
    "show": _show,
    "history": _history,
    "approve": lambda store, a: _acted(approve(store, a.version, a.by, a.note)),
    "reject": lambda store, a: _acted(reject(store, a.version, a.by, a.note)),
    "promote": lambda store, a: _acted(promote(store, a.version, a.by, a.note)),
    "rollback": lambda store, a: _acted(rollback(store, a.by, a.note)),
}


def _person(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must name the person acting")
    return text.strip()


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(add_help=False)  # --root before or after the subcommand
    root.add_argument(
        "--root", type=Path, default=argparse.SUPPRESS, help="data root (default: [paths] root)"
    )
    parser = argparse.ArgumentParser(
        prog="scripts/models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[root],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every version, one line each", parents=[root])
    commands.add_parser("show", help="everything of a version", parents=[root]).add_argument(
        "version", type=int
    )
    commands.add_parser("history", help="the registry's events, oldest first", parents=[root])
    for name, text in (
        ("approve", "approve a version awaiting approval"),
        ("reject", "reject a version awaiting approval, approved or rolling out"),
        ("promote", "make a version the champion now (manual override)"),
        ("rollback", "go back to the champion before the current one"),
    ):
        command = commands.add_parser(name, help=text, parents=[root])
        if name != "rollback":
            command.add_argument("version", type=int)
        command.add_argument("--by", type=_person, required=True, help="who acts (recorded)")
        command.add_argument("--note", default="", help="why (recorded)")
    return parser


def _unreachable(store: Store) -> str | None:
    """Why the registry cannot be used, for a missing embedded store (an action must not create one)."""
    if store.uri.startswith("sqlite:///") and not Path(store.uri[len("sqlite:///") :]).exists():
        return f"no model registry at {store.uri[len('sqlite:///') :]}"
    return None


# A person waits at the terminal: a registry server that does not answer fails in seconds, not after
# MLflow's minutes of retries.
MLFLOW_ENVIRONMENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for key, value in MLFLOW_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    if getattr(args, "root", None):
        import luigi.configuration

        luigi.configuration.get_config().set("paths", "root", str(args.root.resolve()))
    if not paths().root_path().is_dir():
        print(f"scripts/models: no data root at {paths().root_path()}", file=sys.stderr)
        return 1
    try:
        store = models().store()
    except ValueError as refused:  # a [models] setting that names no registered model
        print(f"scripts/models: {refused}", file=sys.stderr)
        return 1
    if missing := _unreachable(store):
        print(f"scripts/models: {missing}", file=sys.stderr)
        return 1
    from mlflow.exceptions import MlflowException

    try:
        ACTIONS[args.command](store, args)
    except (RegistryError, ModelIntegrityError) as refused:
        print(f"scripts/models {args.command}: {refused}", file=sys.stderr)
        return 2
    except (MlflowException, OSError) as failure:
        first = str(failure).strip().splitlines()[0] if str(failure).strip() else type(failure).__name__
        print(f"scripts/models: the model registry at {store.uri} cannot be used: {first}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
