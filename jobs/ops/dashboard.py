"""The operations dashboard: `scripts/dashboard [--days N] [--out DIR] [--root DIR]`.

Reads the run history (`{root}/history/runs.sqlite`: task runs and SLA misses) and the alerts
(`{root}/alerts/alerts.jsonl`) of the last N days and writes one PNG per chart and one
self-contained `index.html` (the PNGs inline as data URIs, no external CSS or JS) to
`{root}/dashboard/`.

The tables behind the charts are in jobs/ops/dashboard_tables.py; this module loads the window,
draws the charts and writes the page. Figures are drawn through `matplotlib.figure.Figure`, never
pyplot: they render with Agg straight to PNG, need no display, and importing this module does not
change the process's matplotlib backend or keep figures alive in pyplot's global registry.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from tqdm import tqdm

from jobs.domain import pages
from jobs.domain.report_page import newest_report
from jobs.files import write_bytes
from jobs.ops.alerts import alerts_file, read_alerts
from jobs.ops.dashboard_tables import (
    STATUSES,
    Summary,
    alerts_frame,
    alerts_per_day,
    daily_runs,
    data_volume,
    decisions,
    model_auc,
    outcomes,
    sla_budgets,
    sla_violations,
    stage_durations,
    totals,
    workflow_durations,
)
from jobs.ops.history import history_file, read_runs, read_sla_misses
from jobs.pipeline.settings import paths

STATUS_COLORS = {"DONE": "#2ca02c", "FAILED": "#d62728", "KILLED": "#8c564b", "RUNNING": "#1f77b4"}
SEVERITY_COLORS = {"info": "#1f77b4", "warning": "#ff7f0e", "error": "#d62728", "critical": "#7b0000"}

# --- the charts: the tables (dashboard_tables) -> matplotlib Figures ------------------------------

Window = tuple[pd.Timestamp, pd.Timestamp]  # the days a per-day chart spans (UTC, no zone)


def _day_axis(ax: Axes, days: Sequence[pd.Timestamp], window: Window | None = None) -> None:
    """Whole days on x, a label a day (fewer for long spans), half a day of room either side. A
    `window` makes the axis span it, so quiet days show as gaps and the charts line up."""
    edges = [pd.Timestamp(d) for d in (*days, *(window or ()))]
    first, last = min(edges).normalize(), max(edges).normalize()
    span = (last - first).days + 1
    ax.xaxis.set_major_locator(mdates.DayLocator(interval=max(1, round(span / 12))))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
    ax.set_xlim(first - pd.Timedelta(hours=18), last + pd.Timedelta(hours=18))


def _stacked_days(ax: Axes, table: pd.DataFrame, colors: Mapping[str, str]) -> None:
    """Stacked bars a day, one segment per column of `table` that has any count."""
    bottom = np.zeros(len(table))
    for column, color in colors.items():
        counts = table[column].to_numpy(dtype=float)
        if counts.any():
            ax.bar(table.index, counts, bottom=bottom, width=0.8, color=color, label=column)
        bottom += counts
    if len(table) <= 31:  # the day's total on top, while there is room for it
        for day, total in zip(table.index, bottom, strict=True):
            ax.annotate(
                f"{total:g}", (day, total), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8
            )
    ax.set_ylim(0, max(bottom.max(), 1) * 1.15)  # room for the totals above the highest bar
    ax.yaxis.get_major_locator().set_params(integer=True)


def _grouped_days(ax: Axes, table: pd.DataFrame, labels: bool = False) -> None:
    """Side-by-side bars a day, one per column of `table` (fabs, workflows), in fixed colours."""
    width = 0.8 / len(table.columns)
    for i, column in enumerate(table.columns):
        offset = pd.to_timedelta((i - (len(table.columns) - 1) / 2) * width, unit="D")
        bars = ax.bar(table.index + offset, table[column], width=width, label=column, color=_color(column))
        if labels and len(table) <= 14:
            ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=1)


def _color(name: str) -> str:
    """The same colour for a fab or workflow in every chart (and run), whatever else is drawn."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#17becf", "#bcbd22", "#e377c2", "#7f7f7f"]
    fixed = {"fab1": 0, "fab2": 1, "fab3": 2, "wafer_yield": 0, "fab_merge": 1, "quality_monitor": 2}
    index = fixed.get(name, sum(name.encode()) % len(palette))
    return palette[index]


def _per_day_chart(
    title: str,
    table: pd.DataFrame,
    bars: Callable[[Axes, pd.DataFrame], None],
    window: Window | None,
    *,
    empty: str,
    ylabel: str,
    xlabel: str,
) -> tuple[Figure, Axes | None]:
    """A chart of `table` (rows: days) drawn by `bars` on a day axis across `window`, and its axes
    for the caller's legend; an empty table gives the figure saying `empty`, and no axes."""
    figure, axes = pages.figure(title)
    ax = axes[0][0]
    if table.empty:
        pages.no_data(ax, empty)
        return figure, None
    bars(ax, table)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    _day_axis(ax, table.index, window)
    return figure, ax


def plot_runs_per_day(daily: pd.DataFrame, window: Window | None = None) -> Figure:
    figure, ax = _per_day_chart(
        "Task runs and success rate per day",
        daily,
        lambda ax, table: _stacked_days(ax, table, STATUS_COLORS),
        window,
        empty="no task runs recorded in this window",
        ylabel="task runs",
        xlabel="day (UTC, of the run's start)",
    )
    if ax is None:
        return figure
    rate = ax.twinx()
    rate.plot(daily.index, 100 * daily["success_rate"], "o-", color="black", label="success rate")
    rate.set_ylim(0, 105)
    rate.set_ylabel("success rate (% of ended runs)")
    bars, more = ax.get_legend_handles_labels(), rate.get_legend_handles_labels()
    rate.legend(bars[0] + more[0], bars[1] + more[1], loc="upper left", bbox_to_anchor=(1.08, 1), fontsize=9)
    return figure


def plot_durations_vs_sla(durations: pd.DataFrame, budgets: Mapping[str, Summary]) -> Figure:
    figure, axes = pages.figure(
        "Workflow duration against the SLA (first task start of the command to the summary's finish)",
        rows=len(budgets),
        height=2.6 * len(budgets) + 1,
    )
    for ax, (workflow, summary) in zip(axes[:, 0], budgets.items(), strict=True):
        ax.set_title(f"{workflow} ({summary.family})", fontsize=11, loc="left")
        runs = durations[durations["workflow"] == workflow]
        if runs.empty:
            pages.no_data(ax, f"no finished {summary.family} runs in this window")
        else:
            _durations(ax, runs, summary.budget.total_seconds() / 60)
    axes[-1][0].set_xlabel("finished (UTC)")
    return figure


def _durations(ax: Axes, runs: pd.DataFrame, budget: float) -> None:
    """One workflow's summary runs against its budget (minutes), the ones over it marked."""
    ok, over = runs[~runs["over"]], runs[runs["over"]]
    ax.scatter(ok["finished"], ok["minutes"], color=STATUS_COLORS["DONE"], label="within the SLA")
    if len(over):
        label = f"over the SLA ({len(over)})"
        ax.scatter(
            over["finished"], over["minutes"], color=STATUS_COLORS["FAILED"], marker="X", s=80, label=label
        )
    ax.axhline(budget, color=STATUS_COLORS["FAILED"], linestyle="--", label=f"SLA budget {budget:g} min")
    if len(runs) <= 12:  # few enough to name: which period each point delivered
        for when, minutes, period in zip(runs["finished"], runs["minutes"], runs["period"], strict=True):
            ax.annotate(
                period, (when, minutes), xytext=(0, 6), textcoords="offset points", fontsize=7, ha="center"
            )
    longest = runs["minutes"].max()
    summary = f"{len(runs)} runs, longest {longest:.3g} min ({longest / budget:.0%} of the budget)"
    ax.set_title(f"{summary}, {int(runs['over'].sum())} over", fontsize=9, loc="right")
    top = max(budget, longest) * 1.15
    ax.set_ylim(-0.03 * top, top)  # a point at ~0 minutes is drawn whole
    ax.set_ylabel("minutes")
    locator = mdates.AutoDateLocator(minticks=3, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    pages.legend_beside(ax)


def plot_outcomes(by_workflow: pd.DataFrame, outcome_counts: pd.DataFrame) -> Figure:
    figure, axes = pages.figure("Outcomes", cols=2, height=max(4.5, 0.3 * len(outcome_counts.head(25)) + 1.5))
    left, right = axes[0]
    left.set_title("task runs by workflow and status", fontsize=11, loc="left")
    if by_workflow.empty:
        pages.no_data(left, "no task runs")
    else:
        _outcome_bars(left, by_workflow)
    right.set_title("decisions and statuses of the done runs", fontsize=11, loc="left")
    if outcome_counts.empty:
        pages.no_data(right, "no decisions recorded")
    else:
        top = outcome_counts.head(25).iloc[::-1]
        labels = [f"{f}: {o}" for f, o in zip(top["family"], top["outcome"], strict=True)]
        bars = right.barh(labels, top["runs"], color="#4c72b0")
        right.bar_label(bars, padding=2, fontsize=8)
        right.set_xlabel("runs")
        right.tick_params(axis="y", labelsize=8)
        right.margins(x=0.12)
    return figure


def _outcome_bars(ax: Axes, by_workflow: pd.DataFrame) -> None:
    """Stacked status bars a workflow, each labelled with its counts: a few failures among
    thousands of runs are too thin to see."""
    start = np.zeros(len(by_workflow))
    for status, color in STATUS_COLORS.items():
        counts = by_workflow[status].to_numpy(dtype=float)
        if counts.any():
            ax.barh(by_workflow.index, counts, left=start, color=color, label=status)
        start += counts
    for y, (_, row) in enumerate(by_workflow.iterrows()):
        text = ", ".join(f"{row[s]} {s.lower()}" for s in STATUSES if row[s])
        ax.annotate(text, (start[y], y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlabel("task runs")
    ax.margins(x=0.45)
    ax.set_xlim(left=0)
    ax.legend(fontsize=9, loc="lower right")


def plot_sla_violations(violations: pd.DataFrame, window: Window | None = None) -> Figure:
    figure, ax = _per_day_chart(
        "SLA violations per day",
        violations,
        _grouped_days,
        window,
        empty="no SLA misses in this window",
        ylabel="periods that missed their deadline",
        xlabel="day of the deadline (UTC)",
    )
    if ax is not None:
        ax.yaxis.get_major_locator().set_params(integer=True)
        pages.legend_beside(ax, title="workflow")
    return figure


def plot_stage_durations(table: pd.DataFrame) -> Figure:
    """`stage_durations` as ranges: min to max (thin), median to p90 (thick), the median (dot)."""
    table = table.iloc[::-1]  # slowest on top
    figure, axes = pages.figure(
        "Seconds per run of each task family (done runs)", height=max(4.5, 0.42 * len(table) + 1.8)
    )
    ax = axes[0][0]
    if table.empty:
        pages.no_data(ax, "no finished task runs")
        return figure
    # Stages differ by orders of magnitude (a conversion in a second, a training in minutes): a
    # log axis keeps all of them readable. A zero-second run is drawn at a millisecond.
    low = table.clip(lower=1e-3)
    y = np.arange(len(table))
    ax.hlines(y, low["min"], low["max"], color="#999", linewidth=1.5, label="min to max")
    ax.hlines(y, low["median"], low["p90"], color="#4c72b0", linewidth=9, label="median to 90th percentile")
    ax.plot(low["median"], y, "o", color="black", markersize=5, label="median")
    ax.set_yticks(y, table.index)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per run (log scale)")
    for row, (runs, median, top) in enumerate(zip(table["runs"], table["median"], low["max"], strict=True)):
        ax.annotate(f"n={runs}, median {median:.3g} s", (top, row), xytext=(8, 0),
                    textcoords="offset points", va="center", fontsize=8)  # fmt: skip
    ax.margins(x=0.3, y=0.08)
    pages.legend_beside(ax)
    return figure


def plot_data_volume(volume: pd.DataFrame) -> Figure:
    figure, axes = pages.figure("STDF landed per fab and day (IngestFab)")
    ax = axes[0][0]
    if volume.empty:
        pages.no_data(ax, "no IngestFab runs in this window")
        return figure
    per_day = volume.pivot_table(index="date", columns="fab", values="mb", aggfunc="sum", fill_value=0)
    _grouped_days(ax, per_day, labels=True)
    offline = volume[volume["status"] == "offline"]
    if len(offline):
        names = ", ".join(f"{f} {d:%b %d}" for d, f in zip(offline["date"], offline["fab"], strict=True))
        ax.set_title(f"offline: {names}"[:150], fontsize=9, loc="left", color=STATUS_COLORS["FAILED"])
    ax.set_ylabel("MB of STDF read")
    ax.set_xlabel("partition date (the day the data is for)")
    _day_axis(ax, per_day.index)
    pages.legend_beside(ax, title="fab")
    return figure


MARKERS = {
    "rolled_back": ("X", "#d62728", "rolled back"),
    "rollout_stopped": ("v", "#ff7f0e", "rollout stopped"),
}


def _version_color(number: int) -> str:
    """A version keeps its colour from challenger to champion (and across runs)."""
    palette = ["#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#bcbd22", "#e377c2", "#8c564b", "#7f7f7f"]
    return palette[(int(number) - 1) % len(palette)]


def plot_model_auc(models: pd.DataFrame) -> Figure:
    """Above: who serves each day (a bar of the wafers: the champion's share, the challenger's
    rollout share on top, a shadow challenger named above it), rollbacks and stopped rollouts
    marked. Below: the day's validated candidate's holdout AUC beside the champion's."""
    if models.empty:
        figure, axes = pages.figure("Model lifecycle: serving versions and candidate AUC")
        pages.no_data(axes[0][0], "no lifecycle days or validated candidates in this window")
        return figure
    figure, axes = pages.figure("Model lifecycle: serving versions and candidate AUC", rows=2, height=7.5)
    serving, auc = axes[0][0], axes[1][0]
    auc.sharex(serving)
    serving.tick_params(labelbottom=False)  # the days are named below
    handles = _serving_bars(serving, models)
    handles += _lifecycle_markers(serving, models)
    serving.set_ylim(0, 1.32)
    serving.set_yticks([0, 0.5, 1])
    serving.set_ylabel("share of the wafers")
    pages.legend_beside(serving, handles, [h.get_label() for h in handles])
    _candidate_auc(auc, models)
    auc.set_xlabel("lifecycle day (the day a candidate is validated for)")
    _day_axis(auc, models["date"])
    return figure


def _serving_bars(ax: Axes, models: pd.DataFrame) -> list[Any]:
    """The stacked share bars, labelled with the versions while there is room; one legend handle
    per version drawn."""
    labels, handles = len(models) <= 21, {}
    for row in models.itertuples():
        share = 0.0 if pd.isna(row.rollout_share) else row.rollout_share
        segments = []
        if not pd.isna(row.champion):
            segments.append((row.champion, 0.0, 1.0 - share, f"v{row.champion}"))
        if not pd.isna(row.challenger) and share > 0:
            segments.append((row.challenger, 1.0 - share, share, f"v{row.challenger} {share:.0%}"))
        for number, bottom, height, text in segments:
            bar = ax.bar(
                row.date, height, bottom=bottom, width=0.8, color=_version_color(number), label=f"v{number}"
            )
            handles.setdefault(number, bar)
            if labels and height >= 0.08:
                ax.text(
                    row.date, bottom + height / 2, text, ha="center", va="center", fontsize=8, color="white"
                )
        if not pd.isna(row.challenger) and share == 0 and labels:  # scored in shadow, serves nothing yet
            ax.text(row.date, 1.02, f"v{row.challenger} {row.challenger_state.replace('_', ' ')}",
                    ha="center", va="bottom", fontsize=7, color=_version_color(row.challenger))  # fmt: skip
        if pd.isna(row.champion) and labels:
            ax.text(
                row.date, 0.5, "no model", ha="center", va="center", fontsize=8, color="#666", rotation=90
            )
    return [handles[n] for n in sorted(handles)]


def _lifecycle_markers(ax: Axes, models: pd.DataFrame) -> list[Any]:
    handles = []
    for column, (marker, color, label) in MARKERS.items():
        days = models[models[column] != ""]
        if days.empty:
            continue
        handles.append(ax.scatter(days["date"], [1.22] * len(days), marker=marker, s=90, color=color,
                                  zorder=3, label=label))  # fmt: skip
        for day, text in zip(days["date"], days[column], strict=True):
            ax.annotate(text.replace(" -> ", " → "), (day, 1.22), xytext=(0, -11), textcoords="offset points",
                        ha="center", fontsize=7, color=color)  # fmt: skip
    return handles


def _candidate_auc(ax: Axes, models: pd.DataFrame) -> None:
    validated = models[models["candidate"].notna()]
    if validated.empty:
        pages.no_data(ax, "no validated candidates in this window")
        return
    ax.plot(validated["date"], validated["champion_auc"], "s--", color="#7f7f7f", label="champion (holdout)")
    won = (validated["decision"] == "won").to_numpy()
    kept_out = np.array([f"v{n}" in kept.split(", ") for n, kept in zip(validated["candidate"],
                         validated["kept_out"], strict=True)], dtype=bool)  # fmt: skip
    for label, rows, color, face in (
        ("candidate won", won & ~kept_out, "#2ca02c", "#2ca02c"),
        ("candidate won, kept out (a rollout ran)", won & kept_out, "#2ca02c", "none"),
        ("candidate lost", ~won, "#d62728", "#d62728"),
    ):
        if rows.any():
            ax.scatter(validated["date"][rows], validated["candidate_auc"][rows], s=50, edgecolors=color,
                       facecolors=face, zorder=3, label=label)  # fmt: skip
    if len(validated) <= 21:
        for row in validated.itertuples():
            if not pd.isna(row.candidate_auc):
                ax.annotate(f"v{row.candidate} {row.candidate_auc:.3f}", (row.date, row.candidate_auc),
                            xytext=(0, 7), textcoords="offset points", ha="center", fontsize=8)  # fmt: skip
    values = validated[["candidate_auc", "champion_auc"]].to_numpy(dtype=float)
    if np.isfinite(values).any():
        low, high = np.nanmin(values), np.nanmax(values)
        ax.set_ylim(max(0.0, low - 0.05), min(1.0, high + 0.05) + 0.005)
    ax.set_ylabel("holdout AUC")
    pages.legend_beside(ax)


def plot_alerts_per_day(per_day: pd.DataFrame, window: Window | None = None) -> Figure:
    figure, ax = _per_day_chart(
        "Alerts per day by severity",
        per_day,
        lambda ax, table: _stacked_days(ax, table, SEVERITY_COLORS),
        window,
        empty="no alerts in this window",
        ylabel="alerts",
        xlabel="day (UTC)",
    )
    if ax is not None:
        pages.legend_beside(ax, title="severity")
    return figure


# --- the page --------------------------------------------------------------------------------------


@dataclass
class History:
    """What the dashboard reads, for one window."""

    runs: pd.DataFrame
    misses: pd.DataFrame
    alerts: pd.DataFrame
    since: dt.datetime
    until: dt.datetime

    def window(self) -> Window:
        return pd.Timestamp(self.since).tz_convert(None), pd.Timestamp(self.until).tz_convert(None)


def load(root: Path, since: dt.datetime, until: dt.datetime) -> History:
    """The runs, SLA misses and alerts under `root` since a time. A root without a history has no
    runs: an in-memory database gives the empty tables with their real columns, without
    creating a history file under the root."""
    database = _under(root, history_file())
    source = database if database.exists() else Path(":memory:")
    runs = read_runs(source, since=since)
    misses = read_sla_misses(source)
    misses = misses[misses["deadline"] >= pd.Timestamp(since)]
    alerts = alerts_frame(read_alerts(_under(root, alerts_file())))
    alerts = alerts[alerts["time"] >= pd.Timestamp(since).tz_convert(None)]
    return History(runs, misses.reset_index(drop=True), alerts.reset_index(drop=True), since, until)


def _under(root: Path, configured: Path) -> Path:
    """The file that lies at `configured` below the configured data root, below `root` instead."""
    return root / configured.relative_to(paths().root_path())


@dataclass
class Chart:
    name: str
    caption: str
    draw: Callable[[], Figure]


def charts(history: History, budgets: Mapping[str, Summary]) -> list[Chart]:
    runs = history.runs
    return [
        Chart(
            "runs_per_day",
            "Task runs per day by status, and the share of ended runs that succeeded",
            lambda: plot_runs_per_day(daily_runs(runs), history.window()),
        ),
        Chart(
            "duration_vs_sla",
            "Each workflow's wall time per delivered period against its SLA budget",
            lambda: plot_durations_vs_sla(workflow_durations(runs, budgets), budgets),
        ),
        Chart(
            "outcomes",
            "Runs per workflow and status; what the done runs decided",
            lambda: plot_outcomes(outcomes(runs), decisions(runs)),
        ),
        Chart(
            "sla_violations",
            "Periods whose summary missed its deadline, per day",
            lambda: plot_sla_violations(sla_violations(history.misses), history.window()),
        ),
        Chart(
            "stage_durations",
            "Run time of each task family",
            lambda: plot_stage_durations(stage_durations(runs)),
        ),
        Chart(
            "data_volume",
            "MB of STDF read per fab and partition date",
            lambda: plot_data_volume(data_volume(runs)),
        ),
        Chart(
            "model_auc",
            "Which versions serve each day (champion, challenger's rollout share), rollbacks and stopped"
            " rollouts; each day's candidate against the champion on the holdout day",
            lambda: plot_model_auc(model_auc(runs)),
        ),
        Chart(
            "alerts_per_day",
            "Alerts per day by severity",
            lambda: plot_alerts_per_day(alerts_per_day(history.alerts), history.window()),
        ),
    ]


def page(
    history: History, root: Path, days: int, images: Mapping[str, tuple[str, bytes]], out: Path | None = None
) -> str:
    """The self-contained HTML page: headline numbers, the charts inline, the recent trouble."""
    runs = history.runs
    numbers = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{pages.cell(v)}</td></tr>"
        for k, v in totals(runs, history.misses, history.alerts).items()
    )
    failed = runs[runs["effective_status"].isin(["FAILED", "KILLED"])]
    failures = failed.sort_values("started", ascending=False).head(20)
    misses = history.misses.sort_values("deadline", ascending=False).head(20)
    alerts = history.alerts.sort_values("time", ascending=False).head(30)
    alerts = alerts[["time", "severity", "workflow", "task", "message", "sent"]]
    body = f"""<p class="meta">data root {html.escape(str(root))}; the last {days} days (runs started since
{pages.when(history.since)} UTC); made {pages.when(history.until)} UTC</p>
{_report_link(root, out)}
<h2>Totals</h2><table>{numbers}</table>
<h2>Charts</h2>{pages.inline_figures(images)}
<h2>Last failures</h2>{_failures_table(failures)}
<h2>SLA misses</h2>{pages.html_table(misses, "no SLA misses in this window")}
<h2>Recent alerts</h2>{pages.html_table(alerts, "no alerts in this window")}
<h2>Stage durations (seconds, done runs)</h2>{pages.html_table(stage_durations(runs), "no runs", index=True)}
<h2>Data volume (IngestFab)</h2>{pages.html_table(_volume_rows(runs), "no IngestFab runs in this window")}
"""
    return pages.document("STDF jobs: operations dashboard", body)


def _report_link(root: Path, out: Path | None) -> str:
    """A link to the newest daily yield report under `root`, relative to the page's folder."""
    report = newest_report(root)
    if report is None:
        return '<p class="empty">no yield report yet</p>'
    target = os.path.relpath(report, out or root / "dashboard")
    name = html.escape(report.parent.name.removeprefix("date="))
    return f'<p>Newest yield report: <a href="{html.escape(target)}">{name}</a></p>'


def _volume_rows(runs: pd.DataFrame) -> pd.DataFrame:
    volume = data_volume(runs)
    dates = pd.to_datetime(volume["date"]).dt.strftime("%Y-%m-%d")  # an empty table has no dtype
    return volume.assign(date=dates).rename(columns={"mb": "MB"})


def _failures_table(failures: pd.DataFrame) -> str:
    """Like html_table, with the error text kept whole and in monospace."""
    if failures.empty:
        return '<p class="empty">no failed or killed runs in this window</p>'
    rows = "".join(
        f"<tr><td>{pages.cell(r.started)}</td><td>{pages.cell(r.effective_status)}</td><td>{pages.cell(r.task_id)}</td>"
        f'<td>{pages.cell(r.host)}</td><td class="error">{pages.cell(r.error)}</td></tr>'
        for r in failures.itertuples(index=False)
    )
    head = "<tr><th>started</th><th>status</th><th>task</th><th>host</th><th>error</th></tr>"
    return f"<table><thead>{head}</thead><tbody>{rows}</tbody></table>"


def render(
    root: Path | None = None, days: int = 30, out: Path | None = None, now: dt.datetime | None = None
) -> list[Path]:
    """Write the charts (PNG) and `index.html` of the last `days` days to `out` (default
    `{root}/dashboard`); return the files written, the page last."""
    root = Path(root) if root is not None else paths().root_path()
    out = Path(out) if out is not None else root / "dashboard"
    now = now or dt.datetime.now(dt.UTC)
    history = load(root, now - dt.timedelta(days=days), now)
    out.mkdir(parents=True, exist_ok=True)
    written, images = [], {}
    # A long history takes a few seconds to draw: a bar then, on a terminal only.
    for chart in tqdm(charts(history, sla_budgets()), desc="dashboard", unit="chart", delay=3, disable=None):
        drawn = pages.png(chart.draw())
        images[chart.name] = (chart.caption, drawn)
        written.append(write_bytes(out / f"{chart.name}.png", drawn))
    index = write_bytes(out / "index.html", page(history, root, days, images, out).encode("utf-8"))
    return [*written, index]


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/dashboard", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--days", type=_positive, default=30, help="the last N days of runs (default 30)")
    parser.add_argument("--out", type=Path, help="output folder (default: {root}/dashboard)")
    parser.add_argument("--root", type=Path, help="data root (default: [paths] root in luigi.cfg)")
    args = parser.parse_args(argv)
    root = args.root.resolve() if args.root else paths().root_path()
    if not root.is_dir():
        print(f"scripts/dashboard: no data root at {root}", file=sys.stderr)
        return 2
    written = render(root, args.days, args.out)
    print(f"wrote {len(written) - 1} charts and {written[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
