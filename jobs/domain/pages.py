"""Self-contained report pages: matplotlib figures as PNG, HTML tables, one page with the PNGs inline.

Shared by the run-history dashboard (jobs/ops/dashboard.py) and the daily yield report
(jobs/domain/report_page.py). Figures are `matplotlib.figure.Figure` objects, never pyplot's: they
render with Agg straight to PNG, need no display, and leave the process's backend and pyplot's
registry of open figures alone. Pages carry their images as data URIs and their style inline:
no external CSS or JavaScript, so a page opens from a mail attachment or a share as it is.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1150px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.8em; }
.meta { color: #666; } .empty { color: #666; font-style: italic; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.error { font-family: monospace; white-space: pre-wrap; max-width: 60em; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.maps figure { display: inline-block; margin: 0.3em; vertical-align: top; }
"""


def figure(
    title: str, rows: int = 1, cols: int = 1, height: float = 4.5, width: float = 11
) -> tuple[Figure, Any]:
    """A titled figure with constrained layout and a (rows, cols) array of axes."""
    made = Figure(figsize=(width, height), layout="constrained")
    made.suptitle(title, fontsize=14, fontweight="bold")
    return made, made.subplots(rows, cols, squeeze=False)


def no_data(ax: Axes, message: str) -> None:
    """An empty input draws a chart that says so, rather than an empty frame or an exception."""
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, color="#666", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def legend_beside(
    ax: Axes, handles: list[Any] | None = None, labels: list[str] | None = None, **kwargs: Any
) -> None:
    """Beside the plot, never over the data (constrained layout makes room for it)."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9, **kwargs)


def png(drawn: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (Agg). Without a timestamp in its metadata: same figure, same bytes."""
    out = io.BytesIO()
    drawn.savefig(out, format="png", dpi=dpi, metadata={"Software": None})
    return out.getvalue()


def when(value: Any) -> str:
    return "" if pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d %H:%M")


def cell(value: Any) -> str:
    """A table cell's text: floats to three decimals without trailing zeros, times to the minute."""
    if isinstance(value, float | np.floating):
        return "" if np.isnan(value) else f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, pd.Timestamp | dt.datetime):
        return when(value)
    return html.escape("" if value is None or value is pd.NaT or value is pd.NA else str(value))


def html_table(table: pd.DataFrame, empty: str, index: bool = False) -> str:
    if table.empty:
        return f'<p class="empty">{html.escape(empty)}</p>'
    if index:
        table = table.reset_index()
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
        for row in table.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def inline_figures(images: Mapping[str, tuple[str, bytes]]) -> str:
    """`<figure>`s with the PNGs as data URIs, by name: (caption, PNG bytes)."""
    return "".join(
        f'<figure id="{html.escape(name)}"><img alt="{html.escape(caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode("ascii")}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        for name, (caption, data) in images.items()
    )


def document(title: str, body: str) -> str:
    """The whole page around `body`, with STYLE inline."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
{body}
</body></html>
"""
