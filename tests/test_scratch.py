"""A compressed file is decompressed once into a plain scratch copy (jobs/stdf/scratch.py): the same
tables as the plain file, hashed in the same pass, the copy gone on every exit path, a dead
writer's copy swept, and a copy that does not fit refused in one line."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.stdf import TABLES, StdfReadError, convert_stdf, read_stdf
from jobs.stdf.__main__ import main as stdf_main
from jobs.stdf.scratch import Scratch, prefix


def _tables(folder: Path) -> dict:
    tables = {name: pq.read_table(folder / f"{name}.parquet") for name in TABLES}
    tables["parts"] = tables["parts"].drop_columns(["source_file"])  # named after each file
    return tables


def _record_ends(data: bytes) -> list[int]:
    """Byte offsets just past each record of a big-endian file."""
    ends, offset = [], 0
    while offset < len(data):
        offset += 4 + struct.unpack(">H", data[offset : offset + 2])[0]
        ends.append(offset)
    return ends


def test_gzipped_file_converts_to_the_plain_file_tables(
    shared_stdf: Path, lot2_bytes: bytes, tmp_path: Path
) -> None:
    scratch = tmp_path / "scratch"
    plain = tmp_path / "lot2.stdf"
    plain.write_bytes(lot2_bytes)
    packed = shared_stdf / "lot2.stdf.gz"
    manifest = convert_stdf(packed, tmp_path / "from_gz", scratch=Scratch(str(scratch)))
    convert_stdf(plain, tmp_path / "from_plain", scratch=Scratch(str(scratch)))
    expected, got = _tables(tmp_path / "from_plain"), _tables(tmp_path / "from_gz")
    assert all(got[name].equals(expected[name]) for name in TABLES)
    assert manifest["input"]["sha256"] == hashlib.sha256(packed.read_bytes()).hexdigest()  # the file's bytes
    assert manifest["input"]["decompressed"]["bytes"] == len(lot2_bytes)
    assert list(scratch.iterdir()) == []


def test_bzip2_file_is_hashed_and_read_once(shared_stdf: Path, tmp_path: Path) -> None:
    packed = tmp_path / "metis.stdf.bz2"
    packed.write_bytes(bz2.compress((shared_stdf / "metis_d10_2site.std").read_bytes()))
    manifest = convert_stdf(packed, tmp_path / "out", scratch=Scratch(str(tmp_path / "scratch")))
    assert manifest["rows"]["parts"] == 22
    assert manifest["input"]["sha256"] == hashlib.sha256(packed.read_bytes()).hexdigest()
    assert list((tmp_path / "scratch").iterdir()) == []


@pytest.mark.parametrize("damage", ["bit_flip", "corrupt_record"])
def test_scratch_copy_is_removed_after_an_error(lot2_bytes: bytes, tmp_path: Path, damage: str) -> None:
    scratch = tmp_path / "scratch"
    if damage == "bit_flip":  # the decompressor fails: before the parse
        packed = bytearray(gzip.compress(lot2_bytes))
        packed[len(packed) // 2] ^= 0x10
    else:  # the parser fails: while the copy is read
        middle = _record_ends(lot2_bytes)[len(_record_ends(lot2_bytes)) // 3]
        broken = lot2_bytes[:middle] + bytes(range(64)) + lot2_bytes[middle + 64 :]
        packed = bytearray(gzip.compress(broken))
    path = tmp_path / "damaged.stdf.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(StdfReadError) as error:
        convert_stdf(path, tmp_path / "out", scratch=Scratch(str(scratch)))
    assert str(path) in str(error.value) and prefix() not in str(error.value)
    assert list(scratch.iterdir()) == [] and not (tmp_path / "out").exists()


def test_stream_cut_on_a_record_boundary_is_truncated(lot2_bytes: bytes, tmp_path: Path) -> None:
    """The copy then ends on a record, as a whole file would: the decompressor knew better."""
    ends = _record_ends(lot2_bytes)
    packed = gzip.compress(lot2_bytes[: ends[len(ends) // 2]])
    path = tmp_path / "cut.stdf.gz"
    path.write_bytes(packed[:-8])  # without the CRC and size trailer
    tables = read_stdf(path, scratch=Scratch(str(tmp_path / "scratch")))
    assert tables.file["truncated"] is True and tables.file["truncated_at"] == ends[len(ends) // 2]
    assert 0 < tables.parts.num_rows < 1569


def test_dead_writers_copy_is_swept(shared_stdf: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = scratch / f"{prefix()}lot2.stdf.gz.tmp-{gone.pid}-1"
    live = scratch / f"{prefix()}lot2.stdf.gz.tmp-{os.getpid()}-1"  # a conversion still running
    other = scratch / f".other-program.tmp-{gone.pid}-1"  # not ours to judge
    for leftover in (dead, live, other):
        leftover.write_bytes(b"plain bytes of a killed conversion")
    convert_stdf(shared_stdf / "lot3.stdf.gz", tmp_path / "out", scratch=Scratch(str(scratch)))
    assert sorted(scratch.iterdir()) == sorted([live, other])


def _run_cli(args: list[str], cfg: Path, capsys: pytest.CaptureFixture, monkeypatch) -> tuple[int, str]:
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(cfg))
    code = stdf_main(args)
    return code, capsys.readouterr().err


def test_copy_over_the_limit_is_a_one_line_error(
    shared_stdf: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text(f"[stdf]\nscratch_dir = {scratch}\nscratch_max_bytes = 100000\n")
    bzipped = tmp_path / "metis.stdf.bz2"  # bzip2 records no size: refused while it is copied
    bzipped.write_bytes(bz2.compress((shared_stdf / "metis_d10_2site.std").read_bytes() * 3))
    for path in (shared_stdf / "lot2.stdf.gz", bzipped):  # gzip: refused before it is copied
        code, err = _run_cli(
            ["convert", str(path), str(tmp_path / "out"), "--quiet"], cfg, capsys, monkeypatch
        )
        assert code == 1 and err.count("\n") == 1, err
        assert err.startswith(f"error: {path}: scratch space: ") and "[stdf] scratch_max_bytes" in err
        assert list(scratch.iterdir()) == [] and not (tmp_path / "out").exists()


def test_full_scratch_disk_is_a_one_line_error(
    shared_stdf: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import jobs.stdf.scratch as scratch_module

    scratch = tmp_path / "scratch"
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text(f"[stdf]\nscratch_dir = {scratch}\n")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(scratch_module.shutil, "disk_usage", lambda _: usage._replace(free=4096))
    path = shared_stdf / "lot2.stdf.gz"
    code, err = _run_cli(["convert", str(path), str(tmp_path / "out"), "--quiet"], cfg, capsys, monkeypatch)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: {path}: scratch space: ") and "4096 free ([stdf] scratch_dir)" in err
    assert list(scratch.iterdir()) == []
