"""ConvertFile under Luigi: content-addressed outputs, idempotent reruns, version bumps."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import luigi
import luigi.configuration
import pytest

from jobs.pipeline.convert import ConvertFile, content_sha256
from jobs.pipeline.landing import landed_files
from jobs.simulation.simulate import main as simulate
from tests.helpers import luigi_settings

DAY = "2026-11-18"


@pytest.fixture()
def root(tmp_path: Path):
    """A small simulated floor, and luigi.cfg's [paths] root pointed at it for the test."""
    args = ["--root", str(tmp_path), "--start", DAY, "--days", "1", "--fabs", "fab1", "--lots", "1"]
    assert simulate([*args, "--wafers", "2", "--faults", f"duplicated:fab1:{DAY}", "--quiet"]) == 0
    with luigi_settings(paths={"root": tmp_path}, versions={}):
        yield tmp_path


def build(*tasks: luigi.Task) -> bool:
    return luigi.build(list(tasks), local_scheduler=True, workers=1, log_level="WARNING")


def day_files(root: Path) -> list[Path]:
    return landed_files(root / "landing" / "fab1" / DAY)


def test_a_day_converts_once_per_content(root: Path) -> None:
    files = day_files(root)
    assert build(*(ConvertFile(path=str(f)) for f in files))
    outputs = {Path(ConvertFile(path=str(f)).output().path).parent for f in files}
    assert {hashlib.sha256(f.read_bytes()).hexdigest() for f in files} == {o.name for o in outputs}
    assert len(outputs) == len(files) - 1  # the duplicated file shares its twin's conversion
    for folder in outputs:
        assert folder.parent == root / "converted" / "v2"
        assert sorted(p.name for p in folder.iterdir()) == [
            "bins.parquet", "manifest.json", "parts.parquet", "results.parquet", "tests.parquet"
        ]  # fmt: skip
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["task"] == "ConvertFile" and manifest["version_tag"] == "v2"
        assert manifest["input"]["sha256"] == folder.name


def test_rerun_is_a_no_op_and_a_version_bump_recomputes(root: Path) -> None:
    task = ConvertFile(path=str(day_files(root)[0]))
    assert build(task)
    first = Path(task.output().path)
    stamp = first.stat().st_mtime_ns
    assert build(ConvertFile(path=str(day_files(root)[0])))
    assert first.stat().st_mtime_ns == stamp  # complete: not run again
    luigi.configuration.get_config().set("versions", "convert", "3")
    bumped = ConvertFile(path=str(day_files(root)[0]))
    assert not bumped.complete() and Path(bumped.output().path).parent.parent.name == "v3"
    assert build(bumped) and bumped.complete() and first.exists()


def test_content_hash_is_cached_and_follows_changes(root: Path, tmp_path: Path) -> None:
    path = tmp_path / "some.stdf"
    path.write_bytes(b"one")
    first = content_sha256(path)
    assert content_sha256(path) == first
    path.write_bytes(b"two!")
    assert content_sha256(path) != first
    assert (root / "cache" / "sha256.sqlite").exists()


def test_an_unreadable_file_gets_a_verdict_not_an_exception(root: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.stdf"
    junk.write_bytes(b"\x02\x00\x00\x0a" + bytes(range(200)))  # a FAR header, then garbage
    task = ConvertFile(path=str(junk))
    assert build(task) and task.complete()
    verdict = json.loads(Path(task.output().path).read_text())
    assert verdict["status"] == "unreadable" and str(junk) in verdict["error"]
    assert verdict["input"]["sha256"] == Path(task.output().path).parent.name
    assert sorted(p.name for p in Path(task.output().path).parent.iterdir()) == ["manifest.json"]
