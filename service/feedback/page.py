"""The governance report as a page (HTML with inline SVG charts), as CSV and as JSON: one GovernanceReport,
three renderings. GET /governance and `avh-cds feedback-report --html FILE` both call these."""
from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape

from service.clinical.cards import UNCHECKED_TITLE, UNCHECKED_TOPIC
from service.feedback.aggregates import COMMENT_CHARS, COMMENTS_PER_TOPIC, FATIGUE_DAYS, Counts, GovernanceReport
from service.feedback.charts import charts_of
from service.feedback.store import SUGGESTIONS_TAKEN

# An accepted entry that names none of its card's recorded suggestions: the card has none, or was issued before avh-cds
# recorded them (schema version 2), or the EHR named an id the card never had.
NOT_RECORDED = "(no suggestion of the card named)"
_templates = Environment(loader=PackageLoader("service.feedback", "templates"), autoescape=select_autoescape(["html"]),
                         trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class Vocabulary:
    """The words the page uses for the codes the store keeps: topic titles, suggestion labels, service titles."""
    topics: dict[str, str]
    suggestions: dict[tuple[str, str], str]      # (topic, suggestion id) -> label
    services: dict[str, str]

    @classmethod
    def of(cls, library, registry) -> "Vocabulary":
        return cls({UNCHECKED_TOPIC: UNCHECKED_TITLE} | {t: d.data["title"] for t, d in library.definitions.items()},
                   {(t, s["id"]): s["label"] for t, d in library.definitions.items() for s in d.data.get("suggestions", [])},
                   {s.id: s.title for s in registry})

    def suggestion_label(self, topic: str, taken: str | None) -> str:
        """The label(s) of the suggestion id(s) an accepted entry took (ids the card files no longer have: as is)."""
        if taken is None:
            return NOT_RECORDED
        return SUGGESTIONS_TAKEN.join(self.suggestions.get((topic, s), s) for s in taken.split(SUGGESTIONS_TAKEN))


def percent(rate: dict) -> str:
    return "–" if rate["value"] is None else f"{rate['value']:.0%}"


def render_json(report: GovernanceReport, words: Vocabulary) -> dict:
    data = report.as_json()
    for row in data["acceptedSuggestions"]:
        row["label"] = words.suggestion_label(row["topic"], row["suggestion"])
    return data


CSV_COUNTS = ("issued", "cards_with_feedback", "no_feedback", "feedback_entries", "accepted", "overridden",
              "feedback_rate", "acceptance_rate", "override_rate")


# = + - @ and their full-width forms (a spreadsheet in an East Asian locale reads ＝ as =), tab, carriage return.
FORMULA_STARTS = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20", "\t", "\r")
INVISIBLE = "\ufeff\u200b\u200c\u200d\u2060"      # byte order mark, zero-width space / joiners, word joiner
LEADING_BLANKS = re.compile(rf"^[\s{INVISIBLE}]+")   # blanks and invisible characters in any order (review13)


def _csv_text(value):
    """A cell a spreadsheet shows as text: an override reason code is chosen by whoever posts feedback, and one
    starting with `=` (or + - @) would run as a formula on the committee member's machine (OWASP CSV injection);
    so would one whose sign comes after blanks or invisible characters, in a spreadsheet that trims cells."""
    if isinstance(value, str) and (value.startswith(FORMULA_STARTS)
                                   or LEADING_BLANKS.sub("", value, count=1).startswith(FORMULA_STARTS)):
        return f"'{value}"
    return value


def _csv_counts(c: Counts) -> list:
    rates = c.as_json()
    return [c.issued, c.with_feedback, c.no_feedback, c.entries, c.accepted, c.overridden,
            *(rates[k]["value"] if rates[k]["value"] is not None else "" for k in ("feedbackRate", "acceptanceRate", "overrideRate"))]


def render_csv(report: GovernanceReport, words: Vocabulary) -> str:
    """One table: a `section` column says which aggregate a row belongs to; counts in the count columns, and for
    reasons and suggestions the item and its count in `item` and `count`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    period = [report.filters.start.isoformat(), report.filters.end.isoformat(), report.filters.service or ""]
    writer.writerow(["section", "period_from", "period_to", "service_filter", "topic", "service", "week", "item",
                     "count", *CSV_COUNTS, "flagged"])

    def row(section, topic="", service="", week="", item="", count="", counts: Counts | None = None, flagged=""):
        writer.writerow([_csv_text(v) for v in (section, *period, topic, service, week, item, count,
                         *(_csv_counts(counts) if counts else [""] * len(CSV_COUNTS)), flagged)])
    row("total", counts=report.total)
    for topic, counts in report.by_topic.items():
        row("topic", topic=topic, counts=counts)
    for service, counts in report.by_service.items():
        row("service", service=service, counts=counts)
    for (topic, service), counts in report.by_topic_and_service.items():
        row("topic_service", topic=topic, service=service, counts=counts)
    for (week, topic), counts in report.weekly.items():
        row("week", topic=topic, week=week.isoformat(), counts=counts)
    for r in report.reasons:
        row("override_reason", topic=r["topic"], item=r["code"] or "", count=r["count"])
    for r in report.suggestions:
        row("accepted_suggestion", topic=r["topic"], item=r["suggestion"] or NOT_RECORDED, count=r["count"])
    row("unknown_cards", counts=report.unknown_cards)
    for f in report.fatigue:
        row("fatigue_30_days", topic=f.topic, counts=f.counts, flagged="yes" if f.flagged else "no")
    return out.getvalue()


def render_html(report: GovernanceReport, words: Vocabulary, generated_at: dt.datetime, link_base: str = "",
                services: list[str] | None = None, comments_note: str = "") -> str:
    """The page. link_base: where the filter form and export links point ("" for a file written offline, which has
    no server to ask)."""
    filters = report.filters
    query = {"from": filters.start.isoformat(), "to": filters.end.isoformat(),
             **({"service": filters.service} if filters.service else {})}
    reasons, suggestions = {}, {}
    for r in report.reasons:
        reasons.setdefault(r["topic"], []).append(r)
    for r in report.suggestions:
        suggestions.setdefault(r["topic"], []).append({**r, "label": words.suggestion_label(r["topic"], r["suggestion"])})
    comments = {}
    for c in report.comments or ():
        comments.setdefault(c["topic"], []).append(c)
    return _templates.get_template("governance.html").render(
        report=report, words=words, total=report.total, percent=percent, generated_at=generated_at,
        link_base=link_base, query=query, export={f: f"{link_base}?{urlencode({**query, 'format': f})}" for f in ("csv", "json")},
        services=sorted(set(services or ()) | set(report.services_seen)), reasons=reasons, suggestions=suggestions,
        comments=comments if report.comments is not None else None, comments_note=comments_note,
        comment_chars=COMMENT_CHARS, comments_per_topic=COMMENTS_PER_TOPIC, fatigue_days=FATIGUE_DAYS,
        flagged=[f for f in report.fatigue if f.flagged],
        charts=charts_of(report, words.topics))
