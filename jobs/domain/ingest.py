"""A fab's day of wafer sort and final test, combined from the per-file conversions: the tables
the nightly chain starts from (dies, results, final-test units) and what the manifest says of
the files (flows, jobs, parts, duplicates, truncations)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from jobs.domain import damage, features
from jobs.domain.conversion import Conversion


def combine_day(readable: list[Conversion], work: Path) -> dict[str, Any]:
    """Write the day's wafer-sort dies/results and final-test units into `work`; return the
    manifest entries. A file resent under another name (same sha256) is read once: the copy
    that landed first counts, later ones are listed as duplicates."""
    seen: dict[str, str] = {}
    sort_folders, test_folders, files, duplicates = [], [], [], []
    for conversion in sorted(readable, key=lambda c: (c.path.stat().st_mtime_ns, c.path.name)):
        path, converted, sha = conversion.path, conversion.manifest, conversion.sha256
        if sha in seen:
            duplicates.append({"file": path.name, "same_as": seen[sha], "sha256": sha})
            continue
        seen[sha] = path.name
        wafer_sort = bool(converted["file"]["wafers"])
        (sort_folders if wafer_sort else test_folders).append(conversion.folder)
        files.append(
            {
                "file": path.name,
                "sha256": sha,
                "flow": "wafer_sort" if wafer_sort else "final_test",
                "job": converted["file"]["job"],
                "parts": converted["rows"]["parts"],
                "truncated": converted["truncated"],
                **damage.damage_note(converted),
            }
        )
    dies, results = features.combine_conversions(sort_folders)
    jobs = {f["sha256"]: f["job"] for f in files}
    dies["job"] = dies["source_sha256"].map(jobs).astype("string")
    dies.to_parquet(work / "dies.parquet", index=False)
    results.to_parquet(work / "results.parquet", index=False)
    units, unparsed = final_test_units(test_folders)
    units.to_parquet(work / "final_test.parquet", index=False)
    return {
        "files": files,
        "duplicate_files": duplicates,
        "truncated_files": [f["file"] for f in files if f["truncated"]],
        "final_test_unparsed_units": unparsed,
        "rows": {"dies": len(dies), "results": len(results), "final_test_units": len(units)},
    }


def final_test_units(folders: list[Path]) -> tuple[pd.DataFrame, int]:
    parts, _ = features.combine_conversions(folders)
    return features.final_test_labels(parts)
