"""A fab's day of wafer sort and final test, combined from the per-file conversions: the tables
the nightly chain starts from (dies and final-test units; the results stay in the conversions,
read through each file's part_key offset) and what the manifest says of the files (flows, jobs,
parts, offsets, duplicates, truncations)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from jobs.domain import damage, features, results
from jobs.domain.conversion import Conversion


def combine_day(readable: list[Conversion], work: Path) -> dict[str, Any]:
    """Write the day's wafer-sort dies and final-test units into `work`; return the
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
    dies, sources = results.read_parts(sort_folders)
    jobs = {f["sha256"]: f["job"] for f in files}
    dies["job"] = dies["source_sha256"].map(jobs).astype("string")
    dies.to_parquet(work / "dies.parquet", index=False)
    offsets = {source.folder.name: source.offset for source in sources}
    for file in files:
        if file["sha256"] in offsets:
            file["part_key_offset"] = offsets[file["sha256"]]
    units, unparsed = final_test_units(test_folders)
    units.to_parquet(work / "final_test.parquet", index=False)
    return {
        "files": files,
        "duplicate_files": duplicates,
        "truncated_files": [f["file"] for f in files if f["truncated"]],
        "final_test_unparsed_units": unparsed,
        "rows": {"dies": len(dies), "results": results.row_count(sources), "final_test_units": len(units)},
    }


def final_test_units(folders: list[Path]) -> tuple[pd.DataFrame, int]:
    parts, _ = results.read_parts(folders)
    return features.final_test_labels(parts)


def result_sources(manifest: dict[str, Any], folder_of: Callable[[str], Path]) -> list[results.Source]:
    """The wafer-sort conversions of an ingest manifest as result sources, in part_key order;
    `folder_of` gives a conversion's folder from its sha256."""
    return [
        results.Source(folder_of(f["sha256"]), f["part_key_offset"])
        for f in sorted(manifest["files"], key=lambda f: f.get("part_key_offset", -1))
        if f["flow"] == "wafer_sort"
    ]
