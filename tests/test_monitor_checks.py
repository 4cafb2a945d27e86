"""The quality monitor's domain functions (jobs/domain/monitor.py) on conversion folders of a few rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.domain import monitor, quality
from jobs.domain.conversion import Conversion
from tests.test_merge import NAMES, conversion, unreadable

BOUNDS = pd.DataFrame({"test": ["VTH*"], "unit": ["V"], "min": [-5.0], "max": [5.0]})
RECORDS = {"FAR": 1, "MIR": 1, "MRR": 1, "PIR": 2, "PRR": 2}


def landed(
    root: Path, sha: str, values: list[float], tests: list[tuple[int, str, str]] | None = None
) -> Conversion:
    """A landed wafer-sort file `{sha}.stdf`, one die per VTH value (every other one failing), converted."""
    tests = tests if tests is not None else [(7, "vth", "V"), (8, "idd", "A")]
    parts = [dict(part_index=i, x_coord=i, passed=i % 2 == 0) for i in range(len(values))]
    converted = conversion(root, sha, parts, [(i, 7, v) for i, v in enumerate(values)], tests)
    converted.path.write_bytes(sha.encode())
    converted.manifest["file"]["record_order"] = {"mir_second": True, "mrr_last": True}
    return converted._replace(manifest={**converted.manifest, "record_counts": RECORDS})


def context(
    root: Path, catalogue: pd.DataFrame, landed_files: list[tuple[float, str, str]]
) -> monitor.WindowContext:
    reference = root / "reference"
    reference.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    days = np.repeat([f"2026-11-0{d}" for d in range(1, 6)], 40)
    pd.DataFrame({"test": "VTH", "value": rng.normal(1.0, 0.01, 200), "day": days}).to_parquet(
        reference / "key_values.parquet", index=False
    )
    return monitor.WindowContext(
        names=NAMES,
        bounds=BOUNDS,
        catalogues={"fab1": catalogue},
        references={"fab1": reference},
        landed={"fab1": landed_files},
        key_tests=["VTH"],
        drift=quality.DriftLimits(),
        yield_floor=0.5,
    )


def test_bounds_in_another_unit_than_the_mapping_are_refused() -> None:
    assert monitor.checked_bounds(BOUNDS, NAMES, "bounds.csv") is BOUNDS
    wrong = BOUNDS.assign(unit="mV")
    with pytest.raises(ValueError, match=r"bounds\.csv: VTH\* is in mV, but VTH is in V"):
        monitor.checked_bounds(wrong, NAMES, "bounds.csv")


def test_the_reference_counts_tests_per_program_and_samples_key_values_per_day(tmp_path: Path) -> None:
    one, two = landed(tmp_path, "aaa", [1.0, 2.0]), landed(tmp_path, "bbb", [3.0, 4.0], [(7, "vth", "V")])
    catalogue, values, files = monitor.monitor_reference(
        [one, two, unreadable(tmp_path, "x")], "fab1", NAMES, ["VTH"]
    )
    assert files == 2
    assert catalogue[["job", "test_num", "test_txt", "files"]].values.tolist() == [
        ["PROG", 7, "vth", 2],
        ["PROG", 8, "idd", 1],
    ]
    assert sorted(values["value"]) == [1.0, 2.0, 3.0, 4.0] and set(values["day"]) == {"2026-11-10"}
    assert monitor.program_catalogue(catalogue, "PROG")["test_num"].tolist() == [7, 8]  # 1 of 2 files: half
    assert monitor.program_catalogue(catalogue, "OTHER").empty


def test_a_sound_file_passes_and_a_resent_or_unreadable_one_fails(tmp_path: Path) -> None:
    one = landed(tmp_path, "aaa", [1.0, 2.0])
    catalogue = monitor.catalogue_of([one])
    ctx = context(tmp_path, catalogue, [(0.0, "early.stdf", "aaa")])
    checked = monitor.check_file("fab1", one, ctx)
    assert checked["failed"] == ["fab1/tmp/aaa.stdf: duplicate file".replace("tmp", tmp_path.name)]
    names = [c["name"].split(": ")[1] for c in checked["checks"]]
    assert names == [
        "decodes",
        "record structure",
        "damage and structure",
        "test program",
        "physical bounds",
        "finite results",
        "duplicate dies",
        "duplicate file",
    ]
    assert checked["sha256"] == "aaa" and checked["values"]["value"].tolist() == [1.0, 2.0]
    alone = monitor.check_file("fab1", one, context(tmp_path, catalogue, []))
    assert alone["failed"] == []
    bad = unreadable(tmp_path, "bad.stdf")
    bad.path.write_bytes(b"x")
    broken = monitor.check_file("fab1", bad, ctx)
    assert broken["failed"] == [f"fab1/{tmp_path.name}/bad.stdf: decodes"]
    assert broken["checks"][0]["figures"] == {"byte_offset": 7}


def test_impossible_values_and_missing_tests_fail(tmp_path: Path) -> None:
    full = landed(tmp_path, "aaa", [1.0, 2.0])
    catalogue = monitor.catalogue_of([full])
    odd = landed(tmp_path, "bbb", [1.0, 50.0], [(7, "vth", "V")])  # 50 V; test 8 missing
    checked = monitor.check_file("fab1", odd, context(tmp_path, catalogue, []))
    assert [f.split(": ")[1] for f in checked["failed"]] == ["test program", "physical bounds"]


def test_the_window_checks_yield_and_drift_and_a_drift_requests_a_retrain(tmp_path: Path) -> None:
    files = [
        landed(tmp_path, "s0", [1.5] * 60),
        landed(tmp_path, "s1", [1.5] * 2),
    ]  # far from the reference 1.0
    ctx = context(tmp_path, monitor.catalogue_of(files[:1]), [])
    checked, window = monitor.inspect_window([("fab1", f) for f in files], ctx)
    assert len(checked) == 2 and not any(f["failed"] for f in checked)
    assert [c.name for c in window] == ["window: yield", "fab1: drift VTH"]
    # the second file retests two dies of the first: the window's yield counts each die's last test once
    assert window[0].passed and window[0].figures["dies"] == 60 and window[0].figures["yield"] == 0.5
    assert not window[1].passed and window[1].severity == "error"
    requests = monitor.retrain_requests(window, "2026-11-10T08:00")
    assert [(r["fab"], r["test"], r["window"]) for r, _ in requests] == [("fab1", "VTH", "2026-11-10T08:00")]
    assert requests[0][0]["psi"] == window[1].figures["psi"] and requests[0][1] == window[1].message


def test_the_page_escapes_names_and_lists_quarantine() -> None:
    check = quality.Check("fab1/<b>.stdf: decodes", False, "error", "bad & broken", {})
    report = monitor.window_report(
        "08:00/08:15",
        [{"name": "x", "checks": [check.as_dict()], "failed": [check.name], "dies": None, "values": None}],
        [{"file": "<b>.stdf", "failed": [check.name]}],
        [quality.Check("window: yield", True, "error", "yield 90%", {})],
    )
    assert "dies" not in report["files"][0] and report["window_checks"][0]["passed"]
    page = monitor.render_html(report)
    assert "&lt;b&gt;.stdf" in page and "<b>" not in page and "bad &amp; broken" in page
    assert page.count(">FAIL<") == 1 and page.count(">ok<") == 1 and "1 quarantined" in page
