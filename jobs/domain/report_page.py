"""The daily yield report: wafer maps, stacked maps, Paretos, Cpk and retests as PNGs, one HTML page,
and the exports (jobs/domain/wafer_export.py). No Luigi: `render_report(inputs, folder)` writes it all.

Speed: a day has tens of wafers, so the wafer maps are drawn by one figure per kind that is made
once and redrawn per wafer (`MapFigure`: new arrays into the same imshow artists, small dpi), each
map an image of a 2-D die grid rather than a marker per die. Drawing costs about the same per
wafer, so a day's report grows linearly with its wafers (scripts/bench report).
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import BoundaryNorm, Colormap, ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from jobs.domain import pages
from jobs.domain import wafer_export as export
from jobs.domain import yield_views as views

REPORTS_FOLDER = "reports"  # below the data root: reports/{version tag}/date=D/index.html
MAP_DPI = 60
CHART_DPI = 80
PASS_GREENS = ("#2ca02c", "#98df8a", "#1a6b1a", "#5fd35f")
# Fail bins: a fixed colour per bin number (bin % len), never green, so a bin looks the same every day.
FAIL_COLORS = (
    "#d62728",
    "#1f77b4",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#ff9896",
    "#aec7e8",
    "#ffbb78",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#393b79",
)
OUTCOMES = (
    ("failed wafer sort", "#d9d9d9"),
    ("final test passed", "#2ca02c"),
    ("final test failed", "#d62728"),
    ("no final-test result", "#fdd0a2"),
)


def newest_report(root: Path) -> Path | None:
    """The page of the newest report day under `root` (any version tag; the latest written wins a tie)."""
    pages_found = list((root / REPORTS_FOLDER).glob("v*/date=*/index.html"))
    if not pages_found:
        return None
    return max(pages_found, key=lambda p: (p.parent.name, p.stat().st_mtime_ns))


def bin_color(number: int, passing: bool) -> str:
    return PASS_GREENS[number % len(PASS_GREENS)] if passing else FAIL_COLORS[number % len(FAIL_COLORS)]


# --- maps ------------------------------------------------------------------------------------------


@dataclass
class Panel:
    """One map of a MapFigure: its colours, and a colour bar label or legend entries."""

    title: str
    cmap: Colormap
    norm: Normalize
    colorbar: str = ""
    legend: list[tuple[str, str]] = field(default_factory=list)  # (label, colour)


class MapFigure:
    """A figure of die maps side by side, made once and redrawn per wafer or stack."""

    def __init__(self, panels: Sequence[Panel], width: float = 9.5, height: float = 4.2):
        self.figure = Figure(figsize=(width, height), layout="constrained")
        self.title = self.figure.suptitle("", fontsize=12, fontweight="bold")
        axes = self.figure.subplots(1, len(panels), squeeze=False)[0]
        self.axes, self.images, self.subtitles = list(axes), [], []
        for ax, panel in zip(axes, panels, strict=True):
            image = ax.imshow(
                np.full((1, 1), np.nan),
                cmap=panel.cmap.with_extremes(bad="white"),
                norm=panel.norm,
                origin="lower",
                interpolation="nearest",
            )
            self.images.append(image)
            self.subtitles.append(ax.set_title(panel.title, fontsize=10))
            ax.set_aspect("equal")
            ax.tick_params(labelsize=7)
            ax.locator_params(nbins=5)
            if panel.colorbar:
                self.figure.colorbar(image, ax=ax, shrink=0.8, label=panel.colorbar)
            if panel.legend:
                handles = [Patch(color=c, label=label) for label, c in panel.legend]
                ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)

    def draw(self, title: str, grids: Sequence[views.Grid], subtitles: Sequence[str] = ()) -> bytes:
        self.title.set_text(title)
        for i, (ax, image, grid) in enumerate(zip(self.axes, self.images, grids, strict=True)):
            image.set_data(np.ma.masked_invalid(grid.values))
            x0, x1, y0, y1 = grid.extent()
            image.set_extent((x0, x1, y0, y1))
            ax.set_xlim(x0, x1)
            ax.set_ylim(y0, y1)
            if i < len(subtitles):
                self.subtitles[i].set_text(subtitles[i])
        data = pages.png(self.figure, dpi=MAP_DPI)
        # The layout of the first map holds for the rest (same panels, similar wafers): solving
        # it again for every map would take most of the drawing time.
        self.figure.set_layout_engine(None)
        return data


def bin_panel(bins: Sequence[int], names: dict[int, views.BinInfo], title: str) -> Panel:
    """Soft bins as categories: index i of `bins` is drawn in that bin's colour."""
    colors = [bin_color(b, names.get(b, views.BinInfo("", b == 1)).passing) for b in bins] or ["#ffffff"]
    legend = [
        (f"{b} {names[b].name if b in names else ''}".strip(), c) for b, c in zip(bins, colors, strict=False)
    ]
    return Panel(
        title,
        ListedColormap(colors),
        BoundaryNorm(np.arange(len(colors) + 1) - 0.5, len(colors)),
        legend=legend,
    )


def bin_index_grid(dies: pd.DataFrame, bins: Sequence[int]) -> views.Grid:
    """The wafer's soft bins as indices into `bins` (the day's bins), for a bin_panel."""
    index = pd.Series(np.arange(len(bins)), index=list(bins))
    return views.grid(dies.assign(_bin=dies["soft_bin"].map(index).astype(float)), "_bin")


def outcome_grid(dies: pd.DataFrame) -> views.Grid:
    """0 failed wafer sort, 1 final test passed, 2 failed, 3 no result yet (OUTCOMES)."""
    ft = dies["ft_failed"]
    code = np.where(~dies["passed"], 0, np.where(ft.isna(), 3, np.where(ft.fillna(False), 2, 1)))
    return views.grid(dies.assign(_code=code.astype(float)), "_code")


def p_fail_scale(*frames: pd.DataFrame) -> float:
    """The top of the p_fail colour scale for a day: its 99th percentile, at least 0.05, so a day
    with low risks still shows contrast and every wafer of the day reads on one scale."""
    values = np.concatenate([f["p_fail"].to_numpy(float) for f in frames]) if frames else np.array([])
    values = values[np.isfinite(values)]
    return max(0.05, float(np.ceil(np.quantile(values, 0.99) * 20) / 20)) if len(values) else 1.0


# --- charts ----------------------------------------------------------------------------------------


def plot_bin_paretos(soft: pd.DataFrame, hard: pd.DataFrame) -> Figure:
    made, axes = pages.figure("Bins by dies, with the cumulative share", cols=2, height=4.2)
    for ax, table, kind in ((axes[0][0], soft, "soft"), (axes[0][1], hard, "hard")):
        _pareto(
            ax,
            [f"{b} {n}".strip() for b, n in zip(table["bin"], table["name"], strict=True)],
            table["dies"].to_numpy(),
            table["cum_share"].to_numpy(),
            [bin_color(b, p) for b, p in zip(table["bin"], table["passing"], strict=True)],
            f"{kind} bins ({int(table['dies'].sum())} dies)",
        )
    return made


def plot_test_pareto(tests: pd.DataFrame, top: int = 15) -> Figure:
    made, axes = pages.figure("Tests that fail most dies (first failing test of each die)", height=4.2)
    table = tests.head(top)
    if table.empty:
        pages.no_data(axes[0][0], "no failing dies")
        return made
    _pareto(
        axes[0][0],
        list(table["test"]),
        table["dies"].to_numpy(),
        table["cum_share"].to_numpy(),
        ["#4c72b0"] * len(table),
        f"{int(tests['dies'].sum())} failing dies, top {len(table)} tests",
    )
    return made


def _pareto(
    ax: Any, labels: list[str], counts: np.ndarray, cumulative: np.ndarray, colors: list[str], title: str
) -> None:
    if not len(counts):
        pages.no_data(ax, "no dies")
        return
    x = np.arange(len(counts))
    bars = ax.bar(x, counts, color=colors)
    ax.bar_label(bars, fontsize=7, padding=1)
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("dies")
    ax.set_title(title, fontsize=10, loc="left")
    share = ax.twinx()
    share.plot(x, 100 * cumulative, "o-", color="black", markersize=3)
    share.set_ylim(0, 105)
    share.set_ylabel("cumulative %")


def plot_wafer_yields(table: pd.DataFrame, floor: float) -> Figure:
    made, axes = pages.figure(
        "Yield per wafer: first pass, final (after retest), forecast", height=4.5, width=12
    )
    ax = axes[0][0]
    if table.empty:
        pages.no_data(ax, "no wafers")
        return made
    x = np.arange(len(table))
    ax.bar(x, 100 * table["final_yield"], width=0.8, color="#9ecae1", label="final wafer-sort yield")
    ax.bar(x, 100 * table["first_pass_yield"], width=0.45, color="#3182bd", label="first-pass yield")
    if table["forecast_yield"].notna().any():
        ax.plot(
            x,
            100 * table["forecast_yield"],
            "D",
            color="#ff7f0e",
            markersize=5,
            label="forecast final-test yield",
        )
    ax.axhline(100 * floor, color="#d62728", linestyle="--", label=f"min_forecast_yield {floor:.0%}")
    labels = [
        f"{f} {lot} {w}" for f, lot, w in zip(table["fab"], table["lot_id"], table["wafer_id"], strict=True)
    ]
    ax.set_xticks(x, labels, rotation=90, fontsize=6)
    low = max(0.0, 100 * float(np.nanmin(table[["first_pass_yield", "final_yield"]].to_numpy())) - 10)
    ax.set_ylim(min(low, 100 * floor - 5), 100)
    ax.set_ylabel("yield %")
    pages.legend_beside(ax)
    return made


def plot_trend(trend: pd.DataFrame, date: dt.date) -> Figure:
    made, axes = pages.figure("Wafer-sort yield per fab, the last 30 days", height=4)
    ax = axes[0][0]
    if trend.empty:
        pages.no_data(ax, "no days")
        return made
    for fab, group in trend.groupby("fab", sort=True):
        ax.plot(group["date"], 100 * group["ws_yield"], "o-", label=fab)
    ax.axvline(pd.Timestamp(date), color="#999", linestyle=":")
    ax.set_ylabel("yield %")
    ax.tick_params(axis="x", labelsize=8, rotation=30)
    pages.legend_beside(ax, title="fab")
    return made


def plot_key_tests(values: pd.DataFrame, stats: pd.DataFrame, tests: Sequence[str]) -> Figure:
    made, axes = pages.figure(
        "Key tests: distribution per fab and the test limits",
        cols=max(len(tests), 1),
        height=3.6,
        width=max(4.0 * len(tests), 6),
    )
    for ax, test in zip(axes[0], tests or ["(none)"], strict=False):
        mine = values[values["test"] == test]
        ax.set_title(test, fontsize=10)
        if mine.empty:
            pages.no_data(ax, "not run today")
            continue
        finite = mine["result"][np.isfinite(mine["result"])]
        edges = np.histogram_bin_edges(finite.clip(*finite.quantile([0.001, 0.999])), bins=50)
        for fab, group in mine.groupby("fab", sort=True):
            row = stats[(stats["test"] == test) & (stats["fab"] == fab)].iloc[0]
            ax.hist(
                group["result"].clip(edges[0], edges[-1]),
                bins=edges,
                histtype="step",
                label=f"{fab} Cpk {row['cpk']:.2f}",
            )
        row = stats[stats["test"] == test].iloc[0]
        for limit in (row["lo_limit"], row["hi_limit"]):
            if np.isfinite(limit):
                ax.axvline(limit, color="#d62728", linestyle="--")
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    return made


def plot_recovery(recovery: pd.DataFrame) -> Figure:
    made, axes = pages.figure(
        "Retests: dies failing their first pass, by soft bin, and those recovered", height=3.8
    )
    ax = axes[0][0]
    if recovery.empty:
        pages.no_data(ax, "no die failed its first pass")
        return made
    x = np.arange(len(recovery))
    ax.bar(x, recovery["failed"], color="#fdae6b", label="failed first pass")
    ax.bar(x, recovery["retested"], width=0.55, color="#9e9ac8", label="retested")
    bars = ax.bar(
        x, recovery["recovered"], width=0.3, color="#2ca02c", label="recovered (pass on the last test)"
    )
    ax.bar_label(bars, fontsize=7, padding=1)
    ax.set_xticks(
        x,
        [f"{b} {n}".strip() for b, n in zip(recovery["bin"], recovery["name"], strict=True)],
        rotation=30,
        ha="right",
        fontsize=8,
    )
    ax.set_ylabel("dies")
    pages.legend_beside(ax)
    return made


# --- the report ------------------------------------------------------------------------------------


@dataclass
class ReportInputs:
    """What a day's report reads (built by the YieldReport task from its inputs)."""

    date: dt.date
    dies: pd.DataFrame  # views.die_table of the day
    results: pd.DataFrame  # fab, part_key, kind, test_num, test_txt, result, failed
    bins: pd.DataFrame  # BINS_SCHEMA rows of the day's wafer-sort files
    tests: pd.DataFrame  # TESTS_SCHEMA rows of the day's wafer-sort files
    forecasts: pd.DataFrame | None  # Score's wafers.parquet (None: not scored)
    scored: str  # Score's status
    previous: tuple[dt.date, pd.DataFrame] | None  # the day before, its die_table with ft_failed
    trend: pd.DataFrame  # views.yield_trend of the last 30 days
    key_tests: list[str]
    min_forecast_yield: float


def render_report(inputs: ReportInputs, folder: Path) -> dict[str, Any]:
    """Write the day's PNGs, exports and `index.html` into `folder`; return the manifest facts."""
    names = views.bin_names(inputs.bins)
    dies = inputs.dies
    images: dict[str, dict[str, tuple[str, bytes]]] = {}
    images["maps"] = wafer_maps(dies, names["soft"], inputs.scored, folder / "maps")
    if inputs.previous is not None:
        day, before = inputs.previous
        images["outcomes"] = outcome_maps(before, day, folder / "outcomes")
    images["stacks"] = stacked_maps(dies, folder / "stacks")
    tables = day_tables(inputs, names)
    charts = {
        "bin_pareto": ("Soft and hard bins by dies", plot_bin_paretos(tables["soft"], tables["hard"])),
        "test_pareto": ("First failing test per die", plot_test_pareto(tables["tests"])),
        "wafer_yield": ("Yield per wafer", plot_wafer_yields(tables["wafers"], inputs.min_forecast_yield)),
        "yield_trend": ("Yield trend per fab, 30 days", plot_trend(inputs.trend, inputs.date)),
        "key_tests": (
            "Key tests with their limits",
            plot_key_tests(tables["values"], tables["cpk"], inputs.key_tests),
        ),
        "retests": ("Dies recovered by retest", plot_recovery(tables["recovery"])),
    }
    images["charts"] = {}
    for name, (caption, chart) in charts.items():
        data = pages.png(chart, dpi=CHART_DPI)
        (folder / f"{name}.png").write_bytes(data)
        images["charts"][name] = (caption, data)
    exported = write_exports(inputs, names, folder / "exports")
    page = report_html(inputs, tables, images, exported)
    (folder / "index.html").write_text(page, encoding="utf-8")
    low_cpk = tables["cpk"][tables["cpk"]["below_target"]]
    return {
        "status": "reported",
        "rows": {
            "dies": len(dies),
            "wafers": len(images["maps"]),
            "previous_day_wafers": len(images.get("outcomes", {})),
        },
        "low_cpk": low_cpk[["test", "fab", "cpk"]].to_dict("records"),
        "images": sum(len(v) for v in images.values()),
        "exports": exported,
    }


def empty_report(date: dt.date, why: str, folder: Path) -> dict[str, Any]:
    """The page of a day without dies (every fab offline): why, and nothing else."""
    body = f'<p class="empty">{html.escape(why)}</p>'
    (folder / "index.html").write_text(pages.document(f"Yield report {date}", body), encoding="utf-8")
    return {"status": why, "rows": {"dies": 0, "wafers": 0, "previous_day_wafers": 0}}


def day_tables(inputs: ReportInputs, names: dict[str, dict[int, views.BinInfo]]) -> dict[str, pd.DataFrame]:
    dies = inputs.dies
    values = views.key_test_values(dies, inputs.results, inputs.key_tests)
    return {
        "soft": views.bin_pareto(dies, "soft_bin", names["soft"]),
        "hard": views.bin_pareto(dies, "hard_bin", names["hard"]),
        "tests": views.first_failing_tests(dies, inputs.results),
        "wafers": views.wafer_yields(dies, inputs.forecasts),
        "values": values,
        "cpk": views.test_statistics(values, views.test_limits(inputs.tests)),
        "recovery": views.retest_recovery(dies, names["soft"]),
    }


def wafer_maps(
    dies: pd.DataFrame, names: dict[int, views.BinInfo], scored: str, folder: Path
) -> dict[str, tuple[str, bytes]]:
    """Per wafer: its soft-bin map and the p_fail map of its passing dies, one PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    bins = sorted(int(b) for b in dies["soft_bin"].unique())
    top = p_fail_scale(dies)
    maps = MapFigure(
        [
            bin_panel(bins, names, "soft bin"),
            Panel(
                "p_fail", colormaps.get_cmap("viridis"), Normalize(0, top), colorbar=f"p_fail (0..{top:g})"
            ),
        ]
    )
    out = {}
    for (fab, lot, wafer), group in views.wafers(dies):
        passed = group["passed"]
        risk = "p_fail of the passing dies" if group["p_fail"].notna().any() else f"p_fail: {scored}"
        data = maps.draw(
            f"{fab} lot {lot} wafer {wafer}: {int(passed.sum())}/{len(group)} pass ({passed.mean():.1%})",
            [bin_index_grid(group, bins), views.grid(group, "p_fail")],
            ["soft bin", risk],
        )
        name = export.sinf_name(fab, lot, wafer).removesuffix(".sinf")
        (folder / f"{name}.png").write_bytes(data)
        out[name] = (f"{fab} {lot} {wafer}", data)
    return out


def outcome_maps(dies: pd.DataFrame, day: dt.date, folder: Path) -> dict[str, tuple[str, bytes]]:
    """Per wafer of the day before: p_fail beside the final-test outcome that has landed since."""
    folder.mkdir(parents=True, exist_ok=True)
    top = p_fail_scale(dies)
    codes = ListedColormap([c for _, c in OUTCOMES])
    maps = MapFigure(
        [
            Panel(
                "p_fail (predicted)",
                colormaps.get_cmap("viridis"),
                Normalize(0, top),
                colorbar=f"p_fail (0..{top:g})",
            ),
            Panel("final test", codes, BoundaryNorm(np.arange(5) - 0.5, 4), legend=list(OUTCOMES)),
        ]
    )
    out = {}
    for (fab, lot, wafer), group in views.wafers(dies):
        tested = group[group["passed"]]
        failed = int(tested["ft_failed"].fillna(False).sum())
        known = int(tested["ft_failed"].notna().sum())
        data = maps.draw(
            f"{day} {fab} lot {lot} wafer {wafer}: {failed} of {known} final-tested dies failed",
            [views.grid(group, "p_fail"), outcome_grid(group)],
        )
        name = export.sinf_name(fab, lot, wafer).removesuffix(".sinf")
        (folder / f"{name}.png").write_bytes(data)
        out[name] = (f"{day} {fab} {lot} {wafer}", data)
    return out


def stacked_maps(dies: pd.DataFrame, folder: Path) -> dict[str, tuple[str, bytes]]:
    """Per lot and per fab-day: the fail share and the mean p_fail per die position."""
    folder.mkdir(parents=True, exist_ok=True)
    top = p_fail_scale(dies)
    maps = MapFigure(
        [
            Panel(
                "fail share", colormaps.get_cmap("Reds"), Normalize(0, 1), colorbar="share of wafers failing"
            ),
            Panel("mean p_fail", colormaps.get_cmap("viridis"), Normalize(0, top), colorbar="mean p_fail"),
        ]
    )
    out = {}
    for label, group in views.stack_groups(dies.assign(failed=~dies["passed"])):
        extent = views.extent_of(group)
        wafer_count = group.groupby(views.WAFER, observed=True).ngroups
        data = maps.draw(
            f"{label}: {wafer_count} wafers stacked",
            [views.stacked(group, "failed", extent), views.stacked(group, "p_fail", extent)],
        )
        name = label.replace(",", "").replace(" ", "_")
        (folder / f"{name}.png").write_bytes(data)
        out[name] = (label, data)
    return out


def write_exports(
    inputs: ReportInputs, names: dict[str, dict[int, views.BinInfo]], folder: Path
) -> dict[str, Any]:
    """A SINF map per wafer under `sinf/` and `dies.csv` (the day, and the day before with its
    final-test outcomes)."""
    (folder / "sinf").mkdir(parents=True, exist_ok=True)
    pass_bins = [b for b, info in names["soft"].items() if info.passing] or [1]
    for (fab, lot, wafer), group in views.wafers(inputs.dies):
        (folder / "sinf" / export.sinf_name(fab, lot, wafer)).write_text(
            export.sinf_text(fab, lot, wafer, group, pass_bins)
        )
    days = {str(inputs.date): inputs.dies}
    if inputs.previous is not None:
        days[str(inputs.previous[0])] = inputs.previous[1]
    (folder / "dies.csv").write_text(export.die_csv(days), encoding="utf-8")
    return {"sinf_maps": len(views.wafers(inputs.dies)), "csv_rows": sum(len(d) for d in days.values())}


def report_html(
    inputs: ReportInputs,
    tables: dict[str, pd.DataFrame],
    images: dict[str, dict[str, tuple[str, bytes]]],
    exported: dict[str, Any],
) -> str:
    dies, floor = inputs.dies, inputs.min_forecast_yield
    wafers = tables["wafers"]
    low = wafers[wafers["forecast_yield"] < floor]
    cpk = tables["cpk"]
    numbers = {
        "dies": len(dies),
        "wafers": len(wafers),
        "fabs": ", ".join(sorted(dies["fab"].unique())),
        "wafer-sort yield": f"{dies['passed'].mean():.2%}" if len(dies) else "–",
        "first-pass yield": f"{dies['first_passed'].mean():.2%}" if len(dies) else "–",
        f"wafers forecast below {floor:.0%}": len(low),
        "scoring": inputs.scored,
        f"key tests with Cpk < {views.CPK_TARGET}": int(cpk["below_target"].sum()),
    }
    head = "".join(f"<tr><th>{html.escape(k)}</th><td>{pages.cell(v)}</td></tr>" for k, v in numbers.items())
    if "outcomes" in images:
        before = f"<h2>Final test of {inputs.previous[0]} against its p_fail</h2>"
        before += f"<div class=maps>{pages.inline_figures(images['outcomes'])}</div>"
    else:
        before = '<h2>Final test of the day before</h2><p class="empty">no earlier day in the history</p>'
    charts = images["charts"]
    keys = ", ".join(inputs.key_tests) or "none configured"
    body = f"""<p class="meta">Wafer sort of {inputs.date}: {len(dies)} dies on {len(wafers)} wafers.
Exports: <a href="exports/dies.csv">dies.csv</a> ({exported["csv_rows"]} dies, this day and the day before),
{exported["sinf_maps"]} SINF maps in <a href="exports/sinf/">exports/sinf/</a>.</p>
<h2>The day</h2><table>{head}</table>
<h2>Paretos</h2>{pages.inline_figures({k: charts[k] for k in ("bin_pareto", "test_pareto")})}
{pages.html_table(tables["soft"].head(12), "no dies")}
<h2>Yield per wafer</h2>{pages.inline_figures({k: charts[k] for k in ("wafer_yield", "yield_trend")})}
{pages.html_table(_percent(low), f"no wafer forecast below {floor:.0%}")}
<h2>Stacked maps: per lot and per fab-day</h2><div class=maps>{pages.inline_figures(images["stacks"])}</div>
<h2>Wafer maps</h2><div class=maps>{pages.inline_figures(images["maps"])}</div>
{before}
<h2>Key tests ({html.escape(keys)}): Cpk against the test limits</h2>
{pages.inline_figures({"key_tests": charts["key_tests"]})}
{pages.html_table(cpk, "no key test ran today")}
<h2>Key tests below Cpk {views.CPK_TARGET}</h2>{pages.html_table(cpk[cpk["below_target"]], "none")}
<h2>Retests</h2>{pages.inline_figures({"retests": charts["retests"]})}
{pages.html_table(tables["recovery"], "no die failed its first pass")}
<h2>Wafers (yields in %)</h2>{pages.html_table(_percent(wafers), "no wafers")}
"""
    return pages.document(f"Yield report {inputs.date}", body)


def _percent(wafers: pd.DataFrame) -> pd.DataFrame:
    """The yield columns of a wafer table in % (one decimal), for the page's tables."""
    columns = ("first_pass_yield", "final_yield", "forecast_yield")
    return wafers.assign(**{c: (100 * wafers[c]).round(1) for c in columns})
