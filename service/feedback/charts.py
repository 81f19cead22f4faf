"""The governance page's charts: matplotlib figures written as SVG on the server, inlined in the page.

matplotlib (not pyplot: no global figure state, no GUI backend) draws them; the page then needs no script and
no request beyond itself, and the offline HTML file carries them too. Text stays text (svg.fonttype none) in the
browser's own sans-serif font, so the figures are small and sharp and their numbers can be searched.
"""
from __future__ import annotations

import hashlib
import io
import re
import textwrap
import threading

import matplotlib
import numpy
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from service.feedback.aggregates import Counts, GovernanceReport
from service.lru import Lru

ACCEPTED, OVERRIDDEN, NO_FEEDBACK, WITH_FEEDBACK = "#2e7d4f", "#c0392b", "#b8c2cc", "#4a7fb0"
FLAGGED, NOT_FLAGGED, THRESHOLD = "#c0392b", "#7f8c9a", "#2d3e50"
STYLE = {"svg.fonttype": "none", "svg.hashsalt": "avh-cds", "font.family": "sans-serif", "font.size": 9,
         "axes.spines.top": False, "axes.spines.right": False, "axes.edgecolor": "#8a96a3",
         "axes.titlesize": 10, "axes.titleweight": "bold", "axes.titlelocation": "left"}
# rcParams are global: one figure is drawn at a time (a page draws three, in milliseconds).
_drawing = threading.Lock()


def _wrap(label: str) -> str:
    return textwrap.fill(label, 28)


def _svg(figure: Figure) -> str:
    out = io.StringIO()
    figure.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    text = out.getvalue()
    return text[text.index("<svg"):]       # inline: no XML prolog or DOCTYPE inside the HTML page


def _draw(paint, width: float, height: float, margins: dict) -> str:
    """Fixed margins, not a layout engine or a tight bounding box: each of those draws the figure once more."""
    with _drawing, matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(width, height))
        figure.subplots_adjust(**margins)
        paint(figure)
        return _svg(figure)


def outcomes_chart(report: GovernanceReport, titles: dict[str, str]) -> str:
    """Per topic: cards issued with and without feedback, and the feedback entries accepted and overridden."""
    topics = list(report.by_topic)
    counts = [report.by_topic[t] for t in topics]
    labels = [titles.get(t, t) for t in topics]

    def paint(figure: Figure) -> None:
        cards, entries = figure.subplots(1, 2, sharey=True)
        rows = range(len(topics))
        _stacked(cards, rows, [c.with_feedback for c in counts], [c.no_feedback for c in counts],
                 WITH_FEEDBACK, NO_FEEDBACK, "with feedback", "no feedback")
        cards.set_title("Cards issued")
        cards.set_yticks(list(rows), [_wrap(label) for label in labels])
        cards.invert_yaxis()
        _stacked(entries, rows, [c.accepted for c in counts], [c.overridden for c in counts],
                 ACCEPTED, OVERRIDDEN, "accepted", "overridden")
        entries.set_title("Feedback entries")
    height = 0.9 + 0.38 * max(len(topics), 1)
    return _draw(paint, 10, height, {"left": 0.22, "right": 0.97, "wspace": 0.08, "top": 1 - 0.5 / height,
                                     "bottom": 0.3 / height})


def _stacked(axes, rows, first, second, first_colour, second_colour, first_label, second_label) -> None:
    axes.barh(rows, first, color=first_colour, label=first_label, height=0.65)
    axes.barh(rows, second, left=first, color=second_colour, label=second_label, height=0.65)
    for row, a, b in zip(rows, first, second):
        if a + b:
            axes.text(a + b, row, f" {a + b:,}", va="center", fontsize=8, color="#2d3e50")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.margins(x=0.12)
    axes.legend(loc="lower right", frameon=False, fontsize=8, ncols=2, bbox_to_anchor=(1, 1.04))
    axes.grid(axis="x", color="#e3e8ed")
    axes.set_axisbelow(True)


def weekly_chart(report: GovernanceReport, titles: dict[str, str]) -> str:
    """Per topic and week of the period, two heat maps: cards issued, and the override rate (blank: no feedback).
    One row per topic reads at a glance where eleven overlapping lines would not. The numbers are in the
    page's weekly table: a number in each cell cost a second or more of drawing."""
    weeks, topics = report.weeks, list(report.by_topic)
    cells = [[report.weekly.get((w, t), Counts()) for w in weeks] for t in topics]
    issued = numpy.array([[c.issued for c in row] for row in cells], dtype=float).reshape(len(topics), len(weeks))
    rates = numpy.ma.masked_invalid(numpy.array([[c.overridden / c.entries if c.entries else numpy.nan for c in row]
                                                 for row in cells], dtype=float).reshape(len(topics), len(weeks)))

    def paint(figure: Figure) -> None:
        if not topics:
            axes = figure.subplots()
            axes.set_axis_off()
            axes.text(0.5, 0.5, "No card was issued in this period.", ha="center", va="center", color="#5b6b7a")
            return
        top, bottom = figure.subplots(2, 1, sharex=True)
        panels = ((top, issued, matplotlib.colormaps["Blues"], dict(vmin=0, vmax=max(issued.max(initial=0), 1)),
                   "Cards issued per week"),
                  (bottom, rates, matplotlib.colormaps["RdYlGn_r"], dict(vmin=0, vmax=1),
                   f"Override rate per week (blank: no feedback; threshold {report.threshold:.0%})"))
        for axes, values, colours, limits, title in panels:
            colours = colours.with_extremes(bad="#f1f3f5")
            # One image per panel (cells as pixels, no smoothing): a vector shape per cell made the page's SVG
            # ten times larger and took longer to draw.
            mesh = axes.imshow(values, cmap=colours, aspect="auto", interpolation="nearest", origin="upper",
                               extent=(0, len(weeks), len(topics), 0), **limits)
            bar = figure.colorbar(mesh, ax=axes, fraction=0.03, pad=0.01)
            bar.outline.set_visible(False)
            if values is rates:
                bar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
                bar.ax.axhline(report.threshold, color=THRESHOLD, linewidth=1.5)
            axes.set_title(title)
            axes.set_yticks([i + 0.5 for i in range(len(topics))], [_wrap(titles.get(t, t)) for t in topics], fontsize=8)
            axes.tick_params(length=0)
            for spine in axes.spines.values():
                spine.set_visible(False)
        step = max(1, len(weeks) // 13)
        bottom.set_xticks([i + 0.5 for i in range(0, len(weeks), step)],
                          [weeks[i].strftime("%d %b") for i in range(0, len(weeks), step)], fontsize=8)
        bottom.set_xlabel("Week starting (Monday, UTC)")
    height = 1.6 + 2 * 0.3 * max(len(topics), 1)
    return _draw(paint, 10, height, {"left": 0.22, "right": 0.93, "top": 1 - 0.35 / height, "bottom": 0.6 / height,
                                     "hspace": 0.3 / (height / 5)})


def fatigue_chart(report: GovernanceReport, titles: dict[str, str]) -> str:
    """Per topic: the override rate over the last 30 days, against the threshold; flagged topics in red."""
    rows = report.fatigue

    def paint(figure: Figure) -> None:
        axes = figure.subplots()
        positions = range(len(rows))
        values = [f.counts.overridden / f.counts.entries if f.counts.entries else 0 for f in rows]
        axes.barh(positions, values, height=0.65, color=[FLAGGED if f.flagged else NOT_FLAGGED for f in rows])
        for row, f, value in zip(positions, rows, values):
            axes.text(value, row, f" {f.counts.overridden:,} of {f.counts.entries:,}", va="center", fontsize=8)
        axes.axvline(report.threshold, color=THRESHOLD, linestyle="--", linewidth=1)
        axes.text(report.threshold, -0.8, f" threshold {report.threshold:.0%}", fontsize=8, color=THRESHOLD)
        axes.set_yticks(list(positions), [_wrap(titles.get(f.topic, f.topic)) for f in rows])
        axes.invert_yaxis()
        axes.set_xlim(0, 1.15)
        axes.xaxis.set_major_formatter(PercentFormatter(1.0))
        axes.set_title("Override rate, last 30 days")
        axes.grid(axis="x", color="#e3e8ed")
        axes.set_axisbelow(True)
    height = 1.0 + 0.38 * max(len(rows), 1)
    return _draw(paint, 10, height, {"left": 0.22, "right": 0.97, "top": 1 - 0.55 / height, "bottom": 0.3 / height})


# matplotlib numbers a figure's ids from 1 (figure_1, axes_1, patch_1, ...) and names clip paths and tick markers by a
# hash of their shape: the page's three inline charts repeated hundreds of ids (invalid HTML), and a chart's
# url(#...) or <use href="#..."> found the first chart's element. Each chart's ids and references to them get its
# name in front ("weekly-chart-axes_1"): unique on the page, which has each chart once.
_ID_OR_REFERENCE = re.compile(r'(\bid="|url\(#|href="#)')


def _own_ids(name: str, svg: str) -> str:
    return _ID_OR_REFERENCE.sub(lambda found: f"{found.group(1)}{name}-chart-", svg)


CHARTS_KEPT = 96
_drawn = Lru(CHARTS_KEPT)     # recently drawn charts, by a digest of what each was drawn from


def _cached(name: str, draw, report: GovernanceReport, titles: dict[str, str], *numbers) -> str:
    """One chart, drawn once for the numbers and words it shows: the fatigue chart (the last 30 days) is the same
    for every period chosen, and a reload or a colleague opening the same link draws nothing."""
    key = hashlib.sha256(repr((name, report.threshold, numbers, sorted(titles.items()))).encode()).hexdigest()
    chart = _drawn.get(key)
    if chart is None:
        chart = _own_ids(name, draw(report, titles))
        _drawn.put(key, chart)
    return chart


def charts_of(report: GovernanceReport, titles: dict[str, str]) -> dict[str, str]:
    """The page's three charts. Drawing takes longer than counting, so each is kept for the next request that
    shows the same numbers (see _cached)."""
    return {"outcomes": _cached("outcomes", outcomes_chart, report, titles, report.by_topic),
            "weekly": _cached("weekly", weekly_chart, report, titles, report.weeks, report.by_topic, report.weekly),
            "fatigue": _cached("fatigue", fatigue_chart, report, titles, report.fatigue)}
