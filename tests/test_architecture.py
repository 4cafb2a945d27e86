"""The layers stay one-way and the output paths stay put: imports read with ast, version tags pinned."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from jobs.pipeline.stages import STAGES
from tests.helpers import REPO, luigi_settings

WORKFLOWS = ("jobs.wafer_yield", "jobs.fab_merge", "jobs.quality_monitor")
# What each layer may import from the suite (besides itself and jobs.files, which all may use).
ALLOWED = {
    "workflow": {"jobs.ops", "jobs.pipeline", "jobs.domain", "jobs.stdf"},
    "jobs.ops": {"jobs.pipeline", "jobs.domain", "jobs.stdf"},
    "jobs.pipeline": {"jobs.domain", "jobs.stdf"},
    "jobs.domain": {"jobs.stdf"},
    "jobs.stdf": set(),
    "jobs.files": set(),
    "jobs.simulation": {"workflow", "jobs.ops", "jobs.pipeline", "jobs.domain", "jobs.stdf"},
    # the lifecycle's entry points: the nightly chain's lifecycle stages under the name users call
    # (`luigi --module jobs.model_lifecycle ValidateCandidate`); nothing imports it
    "jobs.model_lifecycle": {"workflow"},
}
NO_LUIGI = ("jobs.domain", "jobs.stdf", "jobs.files")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    if module in WORKFLOWS:
        return "workflow"
    if module == "jobs" or module.startswith("jobs.__"):
        return "jobs"
    for name in ALLOWED:
        if module == name or module.startswith(name + "."):
            return name
    raise AssertionError(f"{module}: not in any layer; add it to one (tests/test_architecture.py)")


def is_module(name: str) -> bool:
    """Whether a dotted name is one of the suite's modules (not a name inside one)."""
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, relative ones resolved, at any depth."""
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names]
            # `from jobs import wafer_yield` imports a module; `from jobs import __version__` does not
            found += [(node.lineno, n if is_module(n) else base) for n in names]
    return found


def source_files() -> list[Path]:
    return sorted((REPO / "jobs").rglob("*.py"))


def violations() -> list[str]:
    broken = []
    for path in source_files():
        here = module_name(path)
        mine = layer(here)
        for line, target in imports(path):
            where = f"{path.relative_to(REPO)}:{line} imports {target}"
            if target.split(".")[0] == "luigi" and mine in NO_LUIGI:
                broken.append(f"{where}: {mine} knows nothing of luigi")
            if not target.startswith("jobs.") or target.startswith(("jobs.__", "jobs.files")):
                continue
            theirs = layer(target)
            if theirs == mine and mine != "workflow":
                continue
            if theirs == "workflow" and mine == "workflow":
                broken.append(f"{where}: a workflow never imports another; share it below both")
            elif theirs not in ALLOWED.get(mine, set()):
                broken.append(f"{where}: {mine} may not import {theirs}")
    return broken


def test_imports_run_one_way() -> None:
    assert violations() == []


def test_the_rule_reader_sees_a_broken_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a domain module importing luigi and a workflow is reported."""
    bad = REPO / "jobs" / "domain" / "_rule_probe.py"
    bad.write_text("import luigi\nfrom jobs import fab_merge\nfrom jobs.simulation import simulate\n")
    try:
        found = [v for v in violations() if "_rule_probe" in v]
    finally:
        bad.unlink()
    assert len(found) == 3, found


def test_only_simulation_and_tests_import_the_simulator() -> None:
    users = {
        module_name(path)
        for path in source_files()
        for _, target in imports(path)
        if target.startswith("jobs.simulation") and layer(module_name(path)) != "jobs.simulation"
    }
    assert users == set()


# The lineage of every stage at the default versions: its output path's version tag lists these
# stages' versions in this order. An existing data root stays complete only while these hold.
MODEL_CHAIN = (
    "convert",
    "ingest",
    "quality",
    "features",
    "train",
    "deploy",
    "candidate",
    "lifecycle",
    "score",
)
LINEAGE = {
    "convert": ["convert"],
    "ingest": ["convert", "ingest"],
    "quality": ["convert", "ingest", "quality"],
    "features": ["convert", "ingest", "features"],
    "train": ["convert", "ingest", "quality", "features", "train"],
    "deploy": ["convert", "ingest", "quality", "features", "train", "deploy"],
    # validation, the day's plan and scoring read each other across days: one lineage
    "candidate": [*MODEL_CHAIN],
    "lifecycle": [*MODEL_CHAIN],
    "score": [*MODEL_CHAIN],
    "report": [*MODEL_CHAIN, "report"],
    # the report is part of the day: a report version bump reopens every day for one Range rerun
    "daily": [*MODEL_CHAIN, "report", "daily"],
    "fab_hour": ["convert", "fab_hour"],
    "reference": ["convert", "reference"],
    "normalize": ["convert", "fab_hour", "reference", "normalize"],
    "feature_store": ["convert", "fab_hour", "reference", "normalize", "feature_store"],
    "merge": ["convert", "fab_hour", "reference", "normalize", "feature_store", "merge"],
    "monitor_reference": ["convert", "monitor_reference"],
    "monitor": ["convert", "monitor_reference", "monitor"],
}
# Versions other than 1 in luigi.cfg's [versions]: each bump's reason is in luigi.cfg.
DEFAULT_VERSIONS = {"convert": 2, "ingest": 2, "train": 2, "deploy": 2, "score": 2}
FOLDERS = {
    "convert": "converted", "train": "models", "candidate": "candidates", "score": "predictions",
    "daily": "wafer_yield_daily", "merge": "fab_merge_hourly", "monitor": "quality_monitor",
    "report": "reports",
}  # fmt: skip


@pytest.fixture(scope="module")
def stages() -> dict:
    for workflow in WORKFLOWS:
        importlib.import_module(workflow)
    return {key: cls for key, cls in STAGES.items() if key in LINEAGE}


def test_every_stage_is_pinned(stages: dict) -> None:
    assert set(stages) == set(LINEAGE)


@pytest.mark.parametrize("key", sorted(LINEAGE))
def test_version_tag_at_the_default_versions(stages: dict, key: str, tmp_path: Path) -> None:
    with luigi_settings(paths={"root": tmp_path}, versions={}):
        tag = "v" + ".".join(str(DEFAULT_VERSIONS.get(stage, 1)) for stage in LINEAGE[key])
        assert stages[key].version_tag() == tag
        assert stages[key].stage_root() == tmp_path / FOLDERS.get(key, key) / tag


@pytest.mark.parametrize("bumped", sorted(LINEAGE))
def test_one_bump_moves_that_stage_and_everything_downstream(stages: dict, bumped: str) -> None:
    bump = DEFAULT_VERSIONS.get(bumped, 1) + 1
    with luigi_settings(versions={bumped: bump}):
        for key, lineage in LINEAGE.items():
            versions = [bump if stage == bumped else DEFAULT_VERSIONS.get(stage, 1) for stage in lineage]
            expected = "v" + ".".join(map(str, versions))
            assert stages[key].version_tag() == expected, (bumped, key)
