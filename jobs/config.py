"""Shared settings: luigi.Config sections read from the repo's luigi.cfg (or LUIGI_CONFIG_PATH)."""

from __future__ import annotations

import os
from pathlib import Path

import luigi
import luigi.configuration

REPO_CONFIG = Path(__file__).resolve().parent.parent / "luigi.cfg"

# Luigi reads ./luigi.cfg from the working directory; make the repo's file apply from anywhere
# too, unless the user points LUIGI_CONFIG_PATH at a file of their own.
if REPO_CONFIG.exists() and "LUIGI_CONFIG_PATH" not in os.environ:
    luigi.configuration.add_config_path(str(REPO_CONFIG))


class paths(luigi.Config):  # noqa: N801 - section names are luigi.cfg's
    root = luigi.Parameter(default="data", description="Data root; relative paths are taken from the repo")

    def root_path(self) -> Path:
        root = Path(os.path.expanduser(self.root))
        return root if root.is_absolute() else REPO_CONFIG.parent / root


class stdf(luigi.Config):  # noqa: N801
    engine = luigi.ChoiceParameter(choices=["arrow", "pystdf"], default="arrow")
    batch_size = luigi.IntParameter(default=0)
    compression = luigi.Parameter(default="zstd")


class versions(luigi.Config):  # noqa: N801
    convert = luigi.IntParameter(default=1)
