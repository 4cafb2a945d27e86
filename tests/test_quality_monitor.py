"""The quality monitor under Luigi, on a small simulated floor with one fault of every kind.

Four clean days (the reference), a clean day whose windows must quarantine nothing, then a
corrupted and a truncated file, a resent file and a file missing tests, and a file with
impossible values and a fab-day whose threshold-voltage tests drifted. Every check must fail on
its fault and pass on the clean files; windows are half an hour here (RangeByMinutes, interval 30).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode
from luigi.task_register import Register
from luigi.tools.range import RangeByMinutes

from jobs.domain import lifecycle
from jobs.files import read_json
from jobs.ops import quarantine
from jobs.ops.alerts import read_alerts
from jobs.pipeline.requests import open_retrain_requests
from jobs.pipeline.stages import stage_dir
from jobs.quality_monitor import QualityMonitor
from jobs.simulation.simulate import main as simulate
from tests.helpers import luigi_settings

FIRST = dt.date(2026, 11, 10)
MINUTES = 30
CLEAN, BROKEN, RESENT, DRIFTED = (
    FIRST + dt.timedelta(days=n) for n in (4, 5, 6, 7)
)  # after 4 reference days
FAULTS = (
    f"corrupted:fab1:{BROKEN},truncated:fab2:{BROKEN},duplicated:fab1:{RESENT},missing:fab2:{RESENT},"
    f"outlier:fab1:{DRIFTED},drift:fab2:{DRIFTED}:3"
)


def run(*tasks: luigi.Task) -> LuigiStatusCode:
    Register.clear_instance_cache()
    return luigi.build(
        list(tasks), local_scheduler=True, workers=2, log_level="WARNING", detailed_summary=True
    ).status


def settings(root: Path) -> luigi_settings:
    return luigi_settings(
        paths={"root": root}, quality_monitor={"fabs": "fab1,fab2", "window_minutes": MINUTES}
    )


def days_range(first: dt.date, last: dt.date) -> RangeByMinutes:
    start, stop = (
        dt.datetime.combine(first, dt.time()),
        dt.datetime.combine(last + dt.timedelta(days=1), dt.time()),
    )
    return RangeByMinutes(
        of=QualityMonitor, param_name="window", start=start, stop=stop, minutes_interval=MINUTES
    )


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("monitor")
    args = ["--root", str(root), "--start", str(FIRST), "--days", "8", "--fabs", "fab1,fab2", "--lots", "1"]
    assert simulate([*args, "--wafers", "3", "--faults", FAULTS, "--quiet"]) == 0
    with settings(root):
        assert run(days_range(CLEAN, DRIFTED)) == LuigiStatusCode.SUCCESS
        yield root


def reports(day: dt.date) -> list[dict]:
    return [read_json(p) for p in sorted((stage_dir("monitor") / f"date={day}").glob("window=*/report.json"))]


def file_checks(day: dt.date) -> dict[str, dict[str, dict]]:
    """file name -> check kind ('decodes', 'record structure', ...) -> check, over a day's windows."""
    found: dict[str, dict[str, dict]] = {}
    for report in reports(day):
        for checked in report["files"]:
            found[Path(checked["path"]).name] = {c["name"].split(": ", 1)[1]: c for c in checked["checks"]}
    return found


def fault(root: Path, kind: str) -> dict:
    entries = json.loads((root / "truth" / "faults.json").read_text())["faults"]
    return next(e for e in entries if e["kind"] == kind)


def held_names() -> dict[str, dict]:
    return {Path(h["file"]).name: h for h in quarantine.held()}


def test_a_clean_day_quarantines_nothing_and_every_check_ran(floor: Path) -> None:
    checks = file_checks(CLEAN)
    assert len(checks) == 2 * 3 + 2  # 3 wafers a fab, and each fab's final test of the day before
    for name, by_kind in checks.items():
        failed = [k for k, c in by_kind.items() if not c["passed"]]
        assert failed == [], f"{name}: {failed}"
    assert not any(str(CLEAN) in h["from"] for h in quarantine.held())
    windows = [c for r in reports(CLEAN) for c in r["window_checks"]]
    assert any(c["name"] == "fab2: drift VTH_N_PM1" and c["passed"] for c in windows)


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("corrupted", "decodes"),
        ("missing", "test program"),
        ("outlier", "physical bounds"),
    ],
)
def test_each_damaged_file_fails_its_check_and_is_quarantined_with_the_reason(
    floor: Path, kind: str, check: str
) -> None:
    entry = fault(floor, kind)
    name = Path(entry["file"]).name
    day = dt.date.fromisoformat(entry["date"])
    by_kind = file_checks(day)[name]
    assert not by_kind[check]["passed"]
    clean = [by_kind[check] for by_kind in file_checks(CLEAN).values() if check in by_kind]
    assert len(clean) >= 6 and all(c["passed"] for c in clean)  # the check passes on sound files
    held = held_names()[name]
    assert any(c["name"].endswith(check) for c in held["checks"]) and held["from"].endswith(f"{day}/{name}")
    if kind == "missing":
        assert {m.split(" ", 1)[1] for m in by_kind[check]["figures"]["missing"]} == set(entry["tests"])
    if kind == "outlier":
        assert by_kind[check]["figures"]["outside"] == entry["dies"]
    if kind == "corrupted":
        assert held["checks"][0]["figures"]["byte_offset"] > 0


def test_a_truncated_file_is_kept_flagged_and_alerted_never_quarantined(floor: Path) -> None:
    """The damaged-file policy: its complete parts are used (the wafer-yield ingest keeps them too)."""
    entry = fault(floor, "truncated")
    name = Path(entry["file"]).name
    by_kind = file_checks(dt.date.fromisoformat(entry["date"]))[name]
    assert by_kind["record structure"]["passed"]
    flagged = by_kind["damage and structure"]
    assert (flagged["passed"], flagged["severity"]) == (False, "warning")
    assert flagged["figures"]["verdict"] == "truncated" and flagged["figures"]["parts_lost"] >= 1
    assert name not in held_names()
    alerts = [a for a in read_alerts(floor / "alerts" / "alerts.jsonl") if a["message"].startswith(name)]
    lost = flagged["figures"]["parts_lost"]
    assert alerts and f"complete parts kept, {lost} lost" in alerts[0]["message"]


def test_a_resent_file_is_a_duplicate_and_its_twin_is_kept(floor: Path) -> None:
    entry = fault(floor, "duplicated")
    resent = (
        Path(entry["file"]).name if entry["file"].endswith(".resent.stdf.gz") else Path(entry["copy"]).name
    )
    assert resent.endswith(".resent.stdf.gz") and resent in held_names()
    original = resent.replace(".resent", "")
    assert file_checks(RESENT)[original]["duplicate file"]["passed"]
    assert not file_checks(RESENT)[resent]["duplicate file"]["passed"]


def test_drift_alerts_and_requests_a_retrain_without_quarantining(floor: Path) -> None:
    drift = [c for r in reports(DRIFTED) for c in r["window_checks"] if c["name"] == "fab2: drift VTH_N_PM1"]
    assert drift and not any(c["passed"] for c in drift)
    assert (
        min(c["figures"]["psi"] for c in drift) > 0.25
        and max(c["figures"]["ks_pvalue"] for c in drift) < 0.01
    )
    before = [c for r in reports(CLEAN) for c in r["window_checks"] if c["name"] == "fab2: drift VTH_N_PM1"]
    assert before and all(c["passed"] for c in before)  # the same fab the day before: no drift
    drifted_files = {Path(f).name for f in fault(floor, "drift")["files"]}
    assert not drifted_files & set(held_names())  # the data is sound: nothing set aside
    requests = open_retrain_requests(DRIFTED)
    assert ("fab2", "VTH_N_PM1") in {(r["fab"], r["test"]) for _, r in requests}
    assert any("retrain requested" in a["message"] for a in read_alerts(floor / "alerts" / "alerts.jsonl"))


def test_a_retrain_request_waives_the_validation_margin_and_is_recorded(floor: Path) -> None:
    requests = [r for _, r in open_retrain_requests(DRIFTED)]
    champion = {"holdout": {"auc": 0.851, "accuracy": 0.95}, "replay": {"auc": 0.85}}
    candidate = {"holdout": {"auc": 0.851, "accuracy": 0.95}, "replay": {"auc": 0.85}}
    rules = lifecycle.LifecycleRules(0.002, 0.9, 0.01, 0.01, 100, 0.05, 0.05)
    assert lifecycle.validation_decision(candidate, champion, [], rules)["decision"] == "lost"
    decided = lifecycle.validation_decision(candidate, champion, requests, rules)
    assert decided["decision"] == "won" and "retrain requested: drift of VTH_N_PM1 on fab2" in decided["why"]


def test_the_report_is_a_page_too(floor: Path) -> None:
    page = next((stage_dir("monitor") / f"date={BROKEN}").glob("window=*/report.html"))
    assert page.read_text().startswith("<!doctype html>")
    quarantined = [q for r in reports(BROKEN) for q in r["quarantined"]]
    assert len(quarantined) == 1  # the corrupted file; the truncated one is kept
    assert any(
        q["file"] in p.read_text()
        for q in quarantined
        for p in (stage_dir("monitor") / f"date={BROKEN}").glob("*/report.html")
    )


def test_a_released_file_goes_back_and_the_next_window_checks_it_again(floor: Path) -> None:
    name = Path(fault(floor, "outlier")["file"]).name
    origin = quarantine.release(name)
    assert origin.exists() and name not in held_names()
    assert (floor / "quarantine" / "released" / "quality_monitor").rglob(f"{name}.reason.json")
    with pytest.raises(quarantine.ReleaseError, match="no such file in quarantine"):
        quarantine.release(name)
    landed = dt.datetime.fromtimestamp(origin.stat().st_mtime, dt.UTC).replace(
        tzinfo=None, second=0, microsecond=0
    )
    now = landed.replace(minute=landed.minute // MINUTES * MINUTES)  # the window it landed in
    assert run(QualityMonitor(window=now)) == LuigiStatusCode.SUCCESS
    assert name in held_names()  # the same bytes: set aside again, by the window it landed in
    assert QualityMonitor(window=now).manifest()["quarantined"] == [name]


def test_reruns_are_no_ops(floor: Path) -> None:
    windows = [dt.datetime.combine(CLEAN, dt.time()) + dt.timedelta(minutes=MINUTES * n) for n in range(48)]
    assert QualityMonitor.bulk_complete(windows) == windows
    before = {p: p.stat().st_mtime_ns for p in stage_dir("monitor").rglob("manifest.json")}
    assert run(days_range(CLEAN, DRIFTED)) == LuigiStatusCode.SUCCESS
    assert {p: p.stat().st_mtime_ns for p in stage_dir("monitor").rglob("manifest.json")} == before
    assert sum(1 for p in before if f"date={CLEAN}" in str(p)) == 48  # every window of a day, once
