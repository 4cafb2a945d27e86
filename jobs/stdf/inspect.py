"""`python -m jobs.stdf inspect FILE`: the one-screen summary to run first on a refused or flagged file.

Two looks at the file: a walk over the record headers (cheap, bounded; it works on files the
normalizer refuses: which records, the MIR, parts by head/site, where the chain breaks), then the
normalizer itself (structure notes, truncation, or the reason it refuses the file).
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .convert import normalize_file
from .plausibility import Plausibility
from .records import KNOWN_RECORD_TYPES
from .scratch import Scratch
from .source import StdfReadError, compression_of, open_stream, sniff_byte_order

# the header walk stops at either: a summary, not a second parse of a huge file
WALK_BYTES, WALK_RECORDS = 64 << 20, 2_000_000
MIR_TEXT = ("LOT_ID", "PART_TYP", "NODE_NAM", "TSTR_TYP", "JOB_NAM", "JOB_REV", "SBLOT_ID")


@dataclass
class HeaderWalk:
    records: Counter[str] = field(default_factory=Counter)
    parts: Counter[tuple[int, int]] = field(default_factory=Counter)  # (head, site) -> PRRs
    mir: dict[str, str] = field(default_factory=dict)
    end: int = 0  # stream offset past the last complete record walked
    stopped: str | None = None  # why the walk ended before the stream did


def walk_headers(path: Path, order: str, limit: int = WALK_BYTES) -> HeaderWalk:
    """Count records by type and PRRs by head/site from the headers; decode the MIR's names."""
    with open_stream(path) as stream:
        data = stream.read(limit + 1)
    walk, header = HeaderWalk(), struct.Struct(order + "HBB")
    offset = records = 0
    while offset + 4 <= min(len(data), limit) and records < WALK_RECORDS:
        records += 1
        rec_len, typ, sub = header.unpack_from(data, offset)
        body = data[offset + 4 : offset + 4 + rec_len]
        if len(body) < rec_len:
            walk.stopped = f"the record at byte {offset} runs past the end of the file (truncated)"
            break
        name = KNOWN_RECORD_TYPES.get((typ, sub), f"unknown ({typ}, {sub})")
        walk.records[name] += 1
        if name == "PRR" and rec_len >= 2:
            walk.parts[(body[0], body[1])] += 1
        elif name == "MIR" and not walk.mir:
            walk.mir = _mir_names(body)
        offset += 4 + rec_len
    walk.end = offset
    if walk.stopped is None and (len(data) > limit or records == WALK_RECORDS):
        walk.stopped = f"counted the first {offset} bytes only"
    return walk


def _mir_names(body: bytes) -> dict[str, str]:
    """The MIR's first text fields (after 15 bytes of times, station and codes)."""
    names, at = {}, 15
    for name in MIR_TEXT:
        if at >= len(body):
            break
        size = body[at]
        names[name] = body[at + 1 : at + 1 + size].decode("latin-1")
        at += 1 + size
    return names


def inspect(
    path: Path, plausibility: Plausibility | None = None, scratch: Scratch | None = None
) -> tuple[list[str], str | None]:
    """The summary lines, and the one-line reason when the file is unreadable (else None).

    Raises StdfReadError when the file is no STDF at all (nothing to summarize)."""
    order = sniff_byte_order(path)
    walk = walk_headers(path, order.order)
    mir = {k: walk.mir.get(k) or "?" for k in MIR_TEXT} if walk.mir else {}
    cpu = "" if order.cpu_type_agrees else f" (CPU_TYPE {order.cpu_type} disagrees: the FAR's length wins)"
    lines = [
        f"{path.name}: {path.stat().st_size} bytes, {compression_of(path)}, {order.name}{cpu}, "
        f"STDF V{order.stdf_ver}",
        f"tester {mir.get('TSTR_TYP')} node {mir.get('NODE_NAM')}, program {mir.get('JOB_NAM')} "
        f"rev {mir.get('JOB_REV')}, lot {mir.get('LOT_ID')} sublot {mir.get('SBLOT_ID')}"
        if mir
        else "no MIR (Master Information Record): no tester, program or lot",
        f"records: {sum(walk.records.values())} ("
        + ", ".join(f"{n} {t}" for t, n in sorted(walk.records.items(), key=lambda kv: -kv[1]))
        + ")"
        + (f"; {walk.stopped}" if walk.stopped else ""),
        "parts by head/site: "
        + (", ".join(f"{h}/{s}: {n}" for (h, s), n in sorted(walk.parts.items())) or "none"),
    ]
    try:
        _, _, _, facts = normalize_file(
            path, "arrow", 0, lambda _: None, lambda: None, None, plausibility, scratch
        )
    except StdfReadError as error:
        where = f" (reading stopped at byte {error.offset})" if error.offset is not None else ""
        lines.append(f"verdict: UNREADABLE, {error.reason}{where}")
        return lines, f"{error.reason}{where}"
    structure = facts["structure"]
    notes = [f"{k.replace('_', ' ')} {v}" for k, v in structure.items() if isinstance(v, int) and v]
    lines.append("structure: " + ("; ".join(notes) or "PIR ... PRR on every head/site"))
    for key in ("summary_records", "skipped_records", "implausible_records"):
        if structure[key]:
            lines.append(
                f"  {key.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in structure[key].items())
            )
    verdict = f"readable: {facts['parts']} parts, {facts['results']} results"
    if facts["truncated"]:
        lost = structure["parts_lost"]
        verdict = (
            f"TRUNCATED at byte {facts['truncated_at']} (reading stopped there: the last record is "
            f"incomplete): {facts['parts']} complete parts kept, {lost} lost, {facts['results']} results"
        )
    lines.append(f"verdict: {verdict}")
    return lines, None
