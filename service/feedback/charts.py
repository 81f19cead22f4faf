"""The governance page's charts: matplotlib figures written as SVG on the server, inlined in the page.

matplotlib (not pyplot: no global figure state, no GUI backend) draws them; the page then needs no script and
no request beyond itself, and the offline HTML file carries them too. Text stays text (svg.fonttype none) in the
browser's own sans-serif font, so the figures are small and sharp and their numbers can be searched.
"""
from __future__ import annotations

import io
import math
import threading

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from service.feedback.aggregates import Counts, GovernanceReport

ACCEPTED, OVERRIDDEN, NO_FEEDBACK, WITH_FEEDBACK = "#2e7d4f", "#c0392b", "#b8c2cc", "#4a7fb0"
FLAGGED, NOT_FLAGGED, THRESHOLD = "#c0392b", "#7f8c9a", "#2d3e50"
STYLE = {"svg.fonttype": "none", "svg.hashsalt": "avh-cds", "font.family": "sans-serif", "font.size": 9,
         "axes.spines.top": False, "axes.spines.right": False, "axes.edgecolor": "#8a96a3",
         "axes.titlesize": 10, "axes.titleweight": "bold", "axes.titlelocation": "left"}
# rcParams are global: one figure is drawn at a time (a page draws three, in milliseconds).
_drawing = threading.Lock()


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
        cards.set_yticks(list(rows), labels)
        cards.invert_yaxis()
        _stacked(entries, rows, [c.accepted for c in counts], [c.overridden for c in counts],
                 ACCEPTED, OVERRIDDEN, "accepted", "overridden")
        entries.set_title("Feedback entries")
    height = 0.9 + 0.38 * max(len(topics), 1)
    return _draw(paint, 10, height, {"left": 0.2, "right": 0.97, "wspace": 0.08, "top": 1 - 0.5 / height,
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
    """Per week of the period: cards issued and the override rate, one line per topic."""
    weeks = report.weeks
    tab20 = matplotlib.colormaps["tab20"].colors
    colours = tab20[::2] + tab20[1::2]          # the ten strong colours first, then their light pairs

    def paint(figure: Figure) -> None:
        issued, overridden = figure.subplots(2, 1, sharex=True, height_ratios=(1, 1))
        for index, topic in enumerate(report.by_topic):
            series = [report.weekly.get((w, topic), Counts()) for w in weeks]
            colour = colours[index % len(colours)]
            label = titles.get(topic, topic)
            issued.plot(weeks, [c.issued for c in series], marker="o", markersize=3, linewidth=1.5,
                        color=colour, label=label)
            overridden.plot(weeks, [c.overridden / c.entries if c.entries else math.nan for c in series],
                            marker="o", markersize=3, linewidth=1.5, color=colour, label=label)
        issued.set_title("Cards issued per week")
        issued.yaxis.set_major_locator(MaxNLocator(integer=True))
        issued.set_ylim(bottom=0)
        overridden.set_title("Override rate per week (of the feedback entries on that week's cards)")
        overridden.yaxis.set_major_formatter(PercentFormatter(1.0))
        overridden.set_ylim(-0.02, 1.02)
        overridden.axhline(report.threshold, color=THRESHOLD, linestyle="--", linewidth=1)
        for axes in (issued, overridden):
            axes.grid(color="#e3e8ed")
            axes.set_axisbelow(True)
        if report.by_topic:
            issued.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
        figure.autofmt_xdate(rotation=30, ha="right")
    return _draw(paint, 10, 5.2, {"left": 0.06, "right": 0.75, "top": 0.94, "bottom": 0.12, "hspace": 0.25})


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
        axes.set_yticks(list(positions), [titles.get(f.topic, f.topic) for f in rows])
        axes.invert_yaxis()
        axes.set_xlim(0, 1.15)
        axes.xaxis.set_major_formatter(PercentFormatter(1.0))
        axes.set_title("Override rate, last 30 days")
        axes.grid(axis="x", color="#e3e8ed")
        axes.set_axisbelow(True)
    height = 1.0 + 0.38 * max(len(rows), 1)
    return _draw(paint, 10, height, {"left": 0.2, "right": 0.97, "top": 1 - 0.55 / height, "bottom": 0.3 / height})
