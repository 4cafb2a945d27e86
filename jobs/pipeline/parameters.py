"""Parameters checked where they enter, before any path is built from them.

    FabParameter(section)            a fab of a workflow's list ([wafer_yield], [merge] or
                                     [quality_monitor] fabs; without a section: of any of them)
    PlausibleDateParameter, PlausibleDateHourParameter, PlausibleDateMinuteParameter
                                     luigi's date parameters, refusing a date outside
                                     [plausible_dates] (2000-01-01 to today + 2 days)
    inside_root(path)                the one check that a path built from parameters stays in
                                     the data root

A refused value raises ParameterError. On the command line that is one line without a traceback
(`report_in_one_line`, installed by jobs/ops/runtime.py) and luigi's exit code for an error
before scheduling, [retcode] unhandled_exception (40); nothing is written. Dates are checked as
they are parsed (command line, luigi.cfg), not when tasks build each other: the look-backs of a
plausible day may reach before [plausible_dates] first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

import luigi

from jobs.pipeline.settings import merge, models, paths, plausible_dates, quality_monitor, wafer_yield

FAB_SECTIONS = (wafer_yield, merge, quality_monitor)


class ParameterError(ValueError):
    """A parameter value the suite refuses; the message is the one line the user sees."""


class _Named:
    """Knows the option it is given by (`--fab`), for messages."""

    option = "the parameter"

    def __set_name__(self, owner: type, name: str) -> None:
        super().__set_name__(owner, name)  # type: ignore[misc]
        self.option = "--" + name.replace("_", "-")


class FabParameter(_Named, luigi.Parameter):
    """A fab name from the fab list of `section` (a luigi.Config with `fab_list()`), or of any
    workflow when None: an unknown name, a path or `fab1/../fab2` never reaches a folder name."""

    def __init__(self, section: type[luigi.Config] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.section = section

    def normalize(self, x: Any) -> str:
        fab = super().normalize(x)
        sections = [self.section] if self.section else FAB_SECTIONS
        configured = list(dict.fromkeys(f for s in sections for f in configured_fabs(s)))
        if fab not in configured:
            where = " or ".join(f"[{s.get_task_family()}] fabs" for s in sections)
            raise ParameterError(
                f"{self.option} {fab}: not a configured fab; {where} in luigi.cfg: {', '.join(configured)}"
            )
        return fab


def configured_fabs(section: type[luigi.Config]) -> list[str]:
    """A section's fab list, each a plain folder name (the landing zone and partitions use it)."""
    fabs = section().fab_list()
    for fab in fabs:
        if fab in (".", "..") or "/" in fab or "\\" in fab or "\0" in fab:
            raise ParameterError(f"[{section.get_task_family()}] fabs: {fab!r} is not a plain folder name")
    return fabs


class _Plausible(_Named):
    """A date parameter that refuses, when parsing, a date outside [plausible_dates]."""

    kind = "date"

    def parse(self, x: str) -> Any:
        try:
            value = super().parse(x)  # type: ignore[misc]
        except ValueError:
            raise ParameterError(f"{self.option} {x}: not a {self.kind} like {self.example}") from None
        day = value if type(value) is dt.date else value.date()
        first, last = plausible_dates().span()
        if not first <= day <= last:
            raise ParameterError(
                f"{self.option} {x}: not a plausible {self.kind}; the suite takes {first} to {last} "
                "([plausible_dates] in luigi.cfg)"
            )
        return value


class PlausibleDateParameter(_Plausible, luigi.DateParameter):
    example = "2026-11-24"


class PlausibleDateHourParameter(_Plausible, luigi.DateHourParameter):
    kind = "UTC hour"
    example = "2026-11-24T03"


class PlausibleDateMinuteParameter(_Plausible, luigi.DateMinuteParameter):
    kind = "UTC minute"
    example = "2026-11-24T0315"


class RegisteredVersionParameter(luigi.IntParameter):
    """A version of [models] registered_model; one the registry does not have is refused where it
    enters, on the command line (the versions the workflow builds tasks for come from the registry,
    so checking them on every construction would only cost a registry lookup each time)."""

    def parse(self, x: str) -> int:
        from jobs.domain.registry import RegistryError, version

        number = super().parse(x)
        try:
            version(models().store(), number)
        except RegistryError as unknown:
            raise ParameterError(f"--version {number}: {unknown}") from None
        return number


def inside_root(path: Path) -> Path:
    """`path`, if it stays in the data root once `..` is resolved (symlinks the site made, e.g. a
    landing share mounted below the root, are trusted); else a ParameterError."""
    root = os.path.normpath(paths().root_path())
    normal = os.path.normpath(path)
    if os.path.commonpath([root, normal]) != root:
        raise ParameterError(f"{path}: outside the data root {root}")
    return Path(path)


class _OneLine(logging.Filter):
    """Luigi logs an error raised while it builds the command's task with its traceback; a refused
    parameter is the user's typo, said in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ParameterError):
            record.msg, record.args = str(record.exc_info[1]), ()
            record.exc_info, record.exc_text = None, None
        return True


def report_in_one_line() -> None:
    """Install the one-line report of refused parameters (idempotent)."""
    logger = logging.getLogger("luigi-interface")
    if not any(isinstance(f, _OneLine) for f in logger.filters):
        logger.addFilter(_OneLine())


def exact_options() -> None:
    """Make luigi's command line take whole option names only (idempotent). argparse accepts a
    prefix of an option by default, and while luigi has not found the root task yet `--version`
    (ValidateCandidate's) is an ambiguous prefix of the [versions] options (`--versions-score` ...)."""
    from luigi.cmdline_parser import CmdlineParser

    build = CmdlineParser._build_parser
    if getattr(build, "exact", False):
        return

    def exact(root_task: Any = None, help_all: bool = False) -> argparse.ArgumentParser:
        parser = build(root_task=root_task, help_all=help_all)
        parser.allow_abbrev = False
        return parser

    exact.exact = True  # type: ignore[attr-defined]
    CmdlineParser._build_parser = staticmethod(exact)
