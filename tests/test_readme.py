"""The README's commands, run as written against a small demo root, so that the README cannot drift;
and every JSON file that root holds afterwards parses with a strict parser.

What runs, in README order, each in a fresh `bash` with `.venv` activated (`source
.venv/bin/activate`), from a copy of the repo (tracked and untracked files, `.venv` linked, a
`../shared` beside it linked to the real one): every line of a ```bash block (its trailing
`# comment` is left to the shell), every ```python block as one program, and the command
column of the cheat-sheet table. Each must exit 0. The copy's `data/` is a small demo root,
built once (`scripts/demo --start 2026-11-18 --days 3 --wafers 1`); the site config given by
LUIGI_CONFIG_PATH lowers `[wafer_yield] min_devices` so that the small floor trains and scores,
and points `[core] default_scheduler_port` at a free port, so that `scripts/luigid` and the luigi
commands meet there rather than on 8082.

Marker convention: a command is not run when its trailing comment (a bash line), its first line
(a python block) or its time cell (a cheat-sheet row) starts with one of SKIP_MARKS:
    long:      takes minutes (the demo itself, the test suite, benchmarks)
    installs:  installs software
    pending:   needs a feature that is not merged yet (remove the mark once it is)
A command naming ../shared/stdf is skipped when that folder is absent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SKIP_MARKS = ("long:", "installs:", "pending:")
DEMO = ["scripts/demo", "--start", "2026-11-18", "--days", "3", "--wafers", "1"]


@dataclass(frozen=True)
class Command:
    text: str
    kind: str  # "bash" or "python"
    line: int  # where it is in README.md

    def __str__(self) -> str:
        return f"README.md:{self.line}: {self.text.splitlines()[0]}"


def skipped(comment: str) -> bool:
    return comment.strip().lstrip("#").strip().startswith(SKIP_MARKS)


def readme_commands(text: str) -> list[Command]:
    """The commands of README.md meant to run as written, in order (see the module docstring)."""
    commands: list[Command] = []
    lines = text.splitlines()
    fence, block, start, in_cheat_sheet = None, [], 0, False
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if fence is None and stripped.startswith("```"):
            fence, block, start = stripped[3:].strip(), [], number
            continue
        if fence is not None:
            if stripped != "```":
                block.append(line)
                continue
            if fence == "bash":
                for offset, raw in enumerate(block, start=1):
                    command, _, comment = raw.strip().partition(" #")
                    if command and not command.startswith("#") and not skipped(comment):
                        commands.append(Command(raw.strip(), "bash", start + offset))
            elif fence == "python" and block and not skipped(block[0]):
                indent = min(len(b) - len(b.lstrip()) for b in block if b.strip())
                commands.append(Command("\n".join(b[indent:] for b in block), "python", start + 1))
            fence = None
            continue
        if line.startswith("## "):
            in_cheat_sheet = line.strip() == "## Cheat-sheet"
        elif in_cheat_sheet and line.startswith("|") and "`" in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            command = re.match(r"`([^`]+)`", cells[1])
            if command and not skipped(cells[-1]):
                commands.append(Command(command.group(1), "bash", number))
    unique = {c.text: c for c in reversed(commands)}  # a command the cheat-sheet repeats runs once
    return [c for c in commands if unique[c.text] is c]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A copy of the repo with a small demo root as its data/, and the environment of a fresh shell."""
    top = tmp_path_factory.mktemp("readme")
    clone = top / "repo"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    )
    for name in listed.stdout.splitlines():
        if (REPO / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, clone / name)
    (clone / ".venv").symlink_to(REPO / ".venv")
    if SHARED.exists():
        (top / "shared").symlink_to(SHARED)
    config = top / "site.cfg"
    config.write_text(
        f"[paths]\nroot = {clone / 'data'}\n[wafer_yield]\nmin_devices = 1000\n"
        f"[core]\ndefault_scheduler_port = {free_port()}\n"
    )
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(str(REPO)))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=path, LUIGI_CONFIG_PATH=str(config))
    demo = subprocess.run(DEMO, cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-3000:]
    assert "Open next" in demo.stdout and "quarantined F1A26324A01_01.stdf.gz" in demo.stdout
    yield clone, env
    subprocess.run(["scripts/luigid", "stop"], cwd=clone, env=env, capture_output=True, timeout=60)


def run(command: Command, clone: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    if command.kind == "python":
        argv, stdin = ["bash", "-c", "source .venv/bin/activate && python -"], command.text
    else:
        argv, stdin = ["bash", "-c", f"source .venv/bin/activate && {command.text}"], None
    return subprocess.run(argv, cwd=clone, env=env, input=stdin, capture_output=True, text=True, timeout=600)


def test_the_readme_names_its_commands() -> None:
    commands = readme_commands((REPO / "README.md").read_text())
    texts = [c.text for c in commands]
    assert "source .venv/bin/activate" in texts and "scripts/demo" not in texts  # marked long
    assert any(t.startswith("luigi --module jobs.quality_monitor") for t in texts)
    assert sum(c.kind == "python" for c in commands) >= 2


def test_every_readme_command_works_as_written(site: tuple[Path, dict[str, str]]) -> None:
    clone, env = site
    for command in readme_commands((clone / "README.md").read_text()):
        if "../shared/stdf" in command.text and not SHARED.exists():
            continue  # the real tester files are not here
        done = run(command, clone, env)
        output = done.stdout[-1500:] + done.stderr[-3000:]
        assert done.returncode == 0, f"{command} exited {done.returncode}:\n{output}"


def strict(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def test_every_json_file_is_strict_json(site: tuple[Path, dict[str, str]]) -> None:
    clone, _ = site
    files = [p for p in clone.rglob("*") if p.suffix in (".json", ".jsonl") and ".venv" not in p.parts]
    files = [p for p in files if p.is_file() and {"data", "out"} & set(p.relative_to(clone).parts[:1])]
    assert len(files) > 100  # manifests, reports, models, alerts
    for path in files:
        text = path.read_text(encoding="utf-8")
        documents = text.splitlines() if path.suffix == ".jsonl" else [text]
        for number, document in enumerate(documents, start=1):
            try:
                json.loads(document, parse_constant=strict)
            except ValueError as error:
                pytest.fail(f"{path.relative_to(clone)}:{number}: {error}")
