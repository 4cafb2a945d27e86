"""Features of the yield model (jobs/domain/features.py): hand-built tables with known answers, and one
small simulated floor joined with its ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.domain import features as feat
from jobs.domain.results import read_all, read_parts
from jobs.simulation.floor import neighbour_fail_share
from jobs.simulation.simulate import main as simulate
from jobs.stdf import convert_stdf
from jobs.stdf.tables import PARTS_SCHEMA, RESULTS_SCHEMA

GRID = [(x, y) for y in (1, 0, -1) for x in (-1, 0, 1)]  # a 3x3 wafer, centre (0, 0)


def parts_table(dies: list[dict]) -> pd.DataFrame:
    """Parts as results.read_parts returns them; each die dict overrides the defaults."""
    rows = []
    for key, die in enumerate(dies):
        row = dict(part_key=key, lot_id="L1", wafer_id="01", x_coord=0, y_coord=0, hard_bin=1, soft_bin=1)
        row |= dict(passed=True, test_time_ms=100, retest=0, part_txt=None)
        row |= die
        if not row["passed"]:
            row["hard_bin"] = row["soft_bin"] = 2
        rows.append(row)
    frame = pd.DataFrame(rows)
    types = {"part_key": "int64", "x_coord": "int16", "y_coord": "int16", "hard_bin": "uint16"}
    return frame.astype(types | {"retest": "int16", "test_time_ms": "uint32"})


def results_table(rows: list[tuple[int, int, str, float]], kind: str = "PTR") -> pd.DataFrame:
    """(part_key, test_num, test_txt, result) rows."""
    frame = pd.DataFrame(rows, columns=["part_key", "test_num", "test_txt", "result"])
    frame["kind"] = pd.Categorical([kind] * len(frame))
    frame["test_txt"] = frame["test_txt"].astype("category")
    return frame.astype({"part_key": "int64", "test_num": "uint32", "result": "float32"})


NO_RESULTS = results_table([])


def features_of(parts: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """build_features of results given as one batch, as a DataFrame."""
    return feat.build_features(parts, [arrow(results)], fab="fab1").to_pandas()


def arrow(results: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(results, preserve_index=False)


def grid_parts(failing: set[tuple[int, int]], wafer: str = "01", first_key: int = 0) -> list[dict]:
    return [
        dict(part_key=first_key + i, wafer_id=wafer, x_coord=x, y_coord=y, passed=(x, y) not in failing)
        for i, (x, y) in enumerate(GRID)
    ]


def test_failing_neighbours_on_a_grid() -> None:
    # wafer 01 fails the centre and the top-right die; wafer 02 (same coordinates) passes all
    parts = parts_table(grid_parts({(0, 0), (1, 1)}) + grid_parts(set(), "02", first_key=9))
    out = features_of(parts, NO_RESULTS).set_index(["wafer_id", "x_coord", "y_coord"]).sort_index()
    first = out.loc["01"]
    expected = {  # failing neighbours (of the 8), and how many neighbours the die has on the map
        (-1, 1): (1, 3), (0, 1): (2, 5), (1, 1): (1, 3),
        (-1, 0): (1, 5), (0, 0): (1, 8), (1, 0): (2, 5),
        (-1, -1): (1, 3), (0, -1): (1, 5), (1, -1): (1, 3),
    }  # fmt: skip
    for (x, y), (count, present) in expected.items():
        assert first.loc[(x, y), "failing_neighbours"] == count, (x, y)
        assert first.loc[(x, y), "neighbour_fail_share"] == pytest.approx(count / present)
    assert (out.loc["02", "failing_neighbours"] == 0).all()  # no counting across wafers
    assert first.loc[(0, 0), "local_fail_share"] == pytest.approx(1 / 8)  # 5x5 window = the whole map
    assert first["wafer_ws_yield"].iloc[0] == pytest.approx(7 / 9)
    assert out.loc["02", "wafer_ws_yield"].iloc[0] == 1.0


def test_spatial_features_and_identifier_types() -> None:
    out = features_of(parts_table(grid_parts(set())), NO_RESULTS)
    assert list(out.columns[:7]) == ["fab", *feat.FEATURE_KEY, "ws_passed", "ws_hard_bin"]
    assert [str(out[c].dtype) for c in feat.FEATURE_KEY] == ["str", "str", "int16", "int16"]
    assert out["ws_passed"].dtype == bool
    centre = out[(out.x_coord == 0) & (out.y_coord == 0)].iloc[0]
    corner = out[(out.x_coord == 1) & (out.y_coord == 1)].iloc[0]
    wafer_radius = np.hypot(1.5, 1.5)  # the farthest die corner
    assert centre["radius"] == 0 and centre["ring_zone"] == 0
    assert corner["radius"] == pytest.approx(np.sqrt(2))
    assert corner["edge_distance"] == pytest.approx(wafer_radius - np.sqrt(2))
    assert corner["ring_zone"] == 1  # 4 (r/R)^2 = 4 * 2 / 4.5 = 1.8


def test_ring_zones_are_equal_area_rings() -> None:
    x = np.arange(0, 100, dtype=np.int16)
    parts = parts_table([dict(part_key=i, x_coord=int(v)) for i, v in enumerate(x)])
    out = features_of(parts, NO_RESULTS)
    r, big_r = out["radius"].to_numpy(), np.hypot(99.5, 0.5)
    assert (out["ring_zone"].to_numpy() == np.minimum(np.floor(4 * (r / big_r) ** 2), 3)).all()
    assert out.loc[out["radius"] < big_r * np.sqrt(0.25) - 1e-9, "ring_zone"].eq(0).all()
    assert out.loc[out["radius"] > big_r * np.sqrt(0.75) + 1e-9, "ring_zone"].eq(3).all()


def test_the_final_test_of_a_retested_die_counts() -> None:
    parts = parts_table(
        [
            dict(part_key=0, x_coord=0, passed=False),  # first touch fails ...
            dict(part_key=1, x_coord=1),
            dict(part_key=2, x_coord=0, passed=True, retest=1),  # ... and passes on retest
            dict(part_key=3, x_coord=2, passed=True),
            dict(part_key=4, x_coord=2, passed=False),  # same retest number: the later part wins
        ]
    )
    results = results_table([(0, 7, "VDD", 5.0), (2, 7, "VDD", 1.0), (1, 7, "VDD", 2.0), (3, 7, "VDD", 3.0)])
    dies = feat.final_dies(parts)
    assert dies["part_key"].tolist() == [1, 2, 4]
    out = features_of(parts, results).set_index("x_coord")
    assert out.loc[0, "ws_passed"] and not out.loc[2, "ws_passed"]
    assert out.loc[0, "raw_VDD"] == 1.0  # the retest's value, not the first touch's
    assert np.isnan(out.loc[2, "raw_VDD"])  # its final test has no result
    assert out.loc[1, "failing_neighbours"] == 1  # x=2 failed finally; x=0 passed finally


def test_robust_scale() -> None:
    values = np.array(
        [
            [1, 5, 4, 1.0],
            [2, 5, 4, np.nan],
            [3, 5, 4, 2.0],
            [4, 6, 4, 3.0],
            [100, 7, 4, 4.0],
        ]
    )
    z = feat.robust_scale(values)
    assert z[:4, 0] == pytest.approx((np.array([1, 2, 3, 4]) - 3) / 1.4826)  # median 3, MAD 1
    assert z[4, 0] == feat.CLIP  # 65 sigmas: clipped
    q25, q75 = np.percentile([5, 5, 5, 6, 7], [25, 75])  # MAD 0: falls back to the IQR
    assert z[:, 1] == pytest.approx((values[:, 1] - 5) / ((q75 - q25) / 1.349))
    assert (z[:, 2] == 0).all()  # constant: spread 1, all at the median
    assert np.isnan(z[1, 3]) and z[[0, 2, 3, 4], 3] == pytest.approx(
        (np.array([1, 2, 3, 4]) - 2.5) / (1.4826 * 1.0)
    )


def test_tests_become_columns_scaled_per_day() -> None:
    parts = parts_table([dict(part_key=i, x_coord=i) for i in range(5)])
    rows = [(i, 10, "I DD@1.2V", float(v)) for i, v in enumerate([1, 2, 3, 4, 5])]
    rows += [(i, 11, "DUP", 1.0 * i) for i in range(5)] + [(i, 12, "DUP", 2.0) for i in range(5)]
    rows += [(0, 13, "", 1.0)]
    functional = results_table([(i, 20, "SCAN", np.nan) for i in range(5)], kind="FTR")
    out = features_of(parts, pd.concat([results_table(rows), functional]))
    tests = feat.test_columns(out)
    assert tests == ["p_I_DD_1_2V", "p_DUP_11", "p_DUP_12", "p_13"]  # sanitized; collisions numbered
    assert out["p_I_DD_1_2V"].to_numpy() == pytest.approx((np.arange(1, 6) - 3) / 1.4826)
    assert out["raw_I_DD_1_2V"].tolist() == [1, 2, 3, 4, 5]
    assert out["p_13"].isna().sum() == 4
    assert "p_SCAN" not in out and out[tests].dtypes.eq(np.float32).all()


def test_features_streamed_in_batches_equal_one_batch() -> None:
    # tests first seen in later batches, out of number order, and a repeated result across batches
    parts = parts_table([dict(part_key=i, x_coord=i) for i in range(6)])
    rows = [(i, n, f"T{n}", float(i * n)) for n in (30, 10) for i in range(6)]
    rows += [(i, 20, "T20", float(i)) for i in range(0, 6, 2)] + [
        (1, 10, "T10", 99.0),
        (9, 40, "NO DIE", 1.0),
    ]
    results = results_table(rows)
    whole = features_of(parts, results)
    batches = [arrow(results.iloc[i : i + 5]) for i in range(0, len(results), 5)]
    streamed = feat.build_features(parts, batches, fab="fab1").to_pandas()
    pd.testing.assert_frame_equal(streamed, whole)
    assert feat.test_columns(whole) == ["p_T10", "p_T20", "p_T30"]  # the die-less test 40 is no column
    assert whole.loc[1, "raw_T10"] == 99.0  # a repeated result: the last


def test_write_day_unions_the_fabs_columns(tmp_path: Path) -> None:
    parts = parts_table([dict(part_key=i, x_coord=i) for i in range(3)])
    one = results_table([(i, 1, "A", 1.0 * i) for i in range(3)])
    two = results_table([(i, n, t, 2.0) for i in range(3) for n, t in ((1, "A"), (2, "B"))])
    tables = [
        feat.build_features(parts, [arrow(r)], fab=f)
        for f, r in (("fab1", one), ("fab2", two), ("fab3", one))
    ]
    path = tmp_path / "features.parquet"
    assert feat.write_day(iter(tables), path) == {"fab1": 3, "fab2": 3, "fab3": 3}
    day = pd.read_parquet(path)
    assert feat.test_columns(day) == ["p_A", "p_B"] and day["raw_B"].dtype == np.float32
    assert day.groupby("fab")["raw_B"].count().to_dict() == {"fab1": 0, "fab2": 3, "fab3": 0}
    assert pq.ParquetFile(path).num_row_groups == 3 and sorted(p.name for p in tmp_path.iterdir()) == [
        path.name
    ]
    assert (
        feat.write_day([], tmp_path / "empty.parquet") == {}
        and pd.read_parquet(tmp_path / "empty.parquet").empty
    )


def write_folder(folder: Path, parts: list[dict], results: list[dict]) -> Path:
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(parts, schema=PARTS_SCHEMA), folder / "parts.parquet")
    pq.write_table(pa.Table.from_pylist(results, schema=RESULTS_SCHEMA), folder / "results.parquet")
    return folder


def test_parts_and_results_are_keyed_across_files(tmp_path: Path) -> None:
    def part(i: int, wafer: str) -> dict:
        return dict(part_index=i, lot_id="L", wafer_id=wafer, x_coord=i, y_coord=0, passed=True, retest=0)

    def result(i: int, name: str) -> dict:
        return dict(part_index=i, kind="PTR", test_num=1, test_txt=name, result=float(i))

    a = write_folder(tmp_path / "aaa", [part(0, "01"), part(1, "01")], [result(0, "T"), result(1, "T")])
    b = write_folder(tmp_path / "bbb", [part(0, "02")], [result(0, "U")])
    parts, sources = read_parts([a, b, a])  # a folder given twice is read once
    results = read_all(sources)
    assert parts["part_key"].tolist() == [0, 1, 2]
    assert parts["source_sha256"].tolist() == ["aaa", "aaa", "bbb"]
    assert "part_index" not in parts and "part_index" not in results
    assert results["part_key"].dtype == np.int64 and results["part_key"].tolist() == [0, 1, 2]
    assert isinstance(results["test_txt"].dtype, pd.CategoricalDtype)
    assert results["test_txt"].astype(str).tolist() == ["T", "T", "U"]
    assert parts.merge(results, on="part_key")["wafer_id"].tolist() == ["01", "01", "02"]


def test_final_test_labels_parse_and_count_the_unnamed() -> None:
    texts = [
        "lot=L1;wafer=01;x=3;y=-4",
        "y=5;x=-2;wafer=02;lot=L1",  # another field order: parse_part_txt's rule
        "lot=L1;wafer=01;x=3;y=-4",  # the same unit again (a retest): the last result counts
        "lot=L1;wafer=01;x=40000;y=1",  # no int16 coordinate
        "junk",
        None,
    ]
    passed = [False, False, True, True, True, True]
    parts = parts_table(
        [dict(part_key=i, part_txt=t, passed=p) for i, (t, p) in enumerate(zip(texts, passed, strict=True))]
    )
    labels, unparsed = feat.final_test_labels(parts)
    assert unparsed == 3
    assert labels[feat.FEATURE_KEY].values.tolist() == [["L1", "01", 3, -4], ["L1", "02", -2, 5]]
    assert labels["ft_failed"].tolist() == [False, True]
    assert [str(labels[c].dtype) for c in feat.FEATURE_KEY] == ["str", "str", "int16", "int16"]
    assert labels["ft_failed"].dtype == "boolean"


def test_join_labels_leaves_unknown_null() -> None:
    features = features_of(parts_table(grid_parts({(0, 0)})), NO_RESULTS)
    labels = pd.DataFrame({"lot_id": ["L1"], "wafer_id": ["01"], "x_coord": [1], "y_coord": [1]})
    labels = labels.astype({"x_coord": "int16", "y_coord": "int16"}).assign(ft_failed=[True])
    joined = feat.join_labels(features, labels)
    assert len(joined) == len(features) and joined["ft_failed"].dtype == "boolean"
    assert joined["ft_failed"].notna().sum() == 1
    assert joined.loc[(joined.x_coord == 1) & (joined.y_coord == 1), "ft_failed"].tolist() == [True]
    with pytest.raises(pd.errors.MergeError):
        feat.join_labels(features, pd.concat([labels, labels]))  # a die labelled twice is a bug upstream


# --- a small simulated floor ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("floor")
    args = ["--root", str(root), "--start", "2026-11-18", "--days", "1", "--fabs", "fab1"]
    assert simulate([*args, "--lots", "1", "--wafers", "2", "--quiet", "--jobs", "1"]) == 0
    folders = {}
    for path in sorted((root / "landing").glob("fab1/*/*.stdf.gz")):
        convert_stdf(path, root / "converted" / path.name)
        folders[path.name] = root / "converted" / path.name
    sort = [f for name, f in folders.items() if not name.startswith("FT_")]
    final = [f for name, f in folders.items() if name.startswith("FT_")]
    features = feat.fab_features(*read_parts(sort), fab="fab1").to_pandas()
    labels, unparsed = feat.final_test_labels(read_parts(final)[0])
    truth = pd.read_parquet(root / "truth" / "fab1" / "2026-11-18.parquet")
    return dict(features=features, labels=labels, unparsed=unparsed, truth=truth)


def test_simulated_wafers_features(floor: dict) -> None:
    features = floor["features"]
    assert len(features) == features[["wafer_id", "x_coord", "y_coord"]].drop_duplicates().shape[0]
    assert features.groupby("wafer_id").size().between(1400, 1600).all()  # ~1500 dies a wafer
    assert len(feat.test_columns(features)) == 100  # the demo program's parametric tests
    assert sum(c.startswith("raw_") for c in features) == 100
    assert [str(features[c].dtype) for c in feat.FEATURE_KEY] == ["str", "str", "int16", "int16"]
    good = features[features["ws_passed"]]
    assert good[feat.test_columns(features)].notna().all().all()  # a passing die ran every test
    assert features[feat.test_columns(features)].median().abs().max() < 1e-3  # centred per day ...
    assert features[feat.test_columns(features)].abs().max().max() <= feat.CLIP  # ... and clipped
    assert features[feat.SPATIAL_FEATURES + feat.WAFER_FEATURES].notna().all().all()
    assert (features["edge_distance"] > 0).all() and features["failing_neighbours"].between(0, 8).all()
    for _, wafer in features.groupby("wafer_id"):  # the simulator's own neighbour rule
        share = neighbour_fail_share(wafer.x_coord.to_numpy(), wafer.y_coord.to_numpy(), ~wafer.ws_passed)
        assert wafer["neighbour_fail_share"].to_numpy() == pytest.approx(share)


def test_simulated_labels_join_the_truth(floor: dict) -> None:
    features, labels, truth = floor["features"], floor["labels"], floor["truth"]
    assert floor["unparsed"] == 0 and len(labels) == len(truth)
    joined = feat.join_labels(features, labels)
    assert joined["ws_passed"].sum() == len(truth)  # final test gets exactly the sort-good dies
    assert joined.loc[joined["ws_passed"], "ft_failed"].notna().all()
    assert joined.loc[~joined["ws_passed"], "ft_failed"].isna().all()
    with_truth = joined.merge(truth, on=feat.FEATURE_KEY, suffixes=("", "_truth"), validate="one_to_one")
    assert len(with_truth) == len(truth)
    assert (with_truth["ft_failed"].astype(bool) == with_truth["ft_failed_truth"]).all()
