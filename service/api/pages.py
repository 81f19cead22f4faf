"""Human-readable pages: the care pathway every card's `source.url` points into (`/pathway#<topic>`), and the
front page at `/` that lists what a person can open (the base URL the README names must not be a 404).

The page is built from data: the card definitions (cards/<topic>.json, the same text the cards carry), the
references, and cards/pathway-page.json (the pathway's stages and decision points, and the source's
statements). One template (templates/pathway.html), no external resource: it opens offline and prints.
"""
from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, render_template, request
from markdown_it import MarkdownIt

from service.clinical.cards import UNCHECKED_TOPIC, CardLibrary

bp = Blueprint("pages", __name__, template_folder="templates")
PLACEHOLDER = re.compile(r"\{(\w+)\}")
_markdown = MarkdownIt("commonmark", {"html": False})     # card text may not inject HTML into the page


def card_html(template: str) -> str:
    """A card text's markdown with its `{variable}` placeholders shown as ‹variable›, as HTML."""
    return _markdown.render(PLACEHOLDER.sub(lambda m: "‹" + m.group(1).replace("_", " ") + "›", template))


@cache
def page_data(cards_dir: Path) -> dict:
    data = json.loads((cards_dir / "pathway-page.json").read_text())
    return {**data, "source_title": json.loads((cards_dir / "references.json").read_text())["source"]["title"]}


def _condition(item: dict, flags: dict, otherwise: bool) -> str:
    """When a text variant applies, in words: "only when deficit progressing rapidly", "otherwise", or ""."""
    def words(names):
        return ", ".join(flags.get(f, f.replace("_", " ")) for f in names)
    parts = ([f"only when {words(item['when'])}"] if item.get("when") else []) + \
            ([f"unless {words(item['unless'])}"] if item.get("unless") else [])
    return " ".join(parts) or ("otherwise" if otherwise else "")


def _variants(items: list, flags: dict, otherwise: bool = False) -> list[dict]:
    """`otherwise`: the items are alternatives (summaries), the last one applying when no other does."""
    return [{"html": card_html(item["text"]) if "text" in item else "", "label": item.get("label", ""),
             "condition": _condition(item, flags, otherwise and len(items) > 1)} for item in items]


def pathway_view(library: CardLibrary, data: dict) -> dict:
    """What the template shows: the picture's stages and decision points, each topic's card text, the sources."""
    flags = data["flags"]
    topics = [{"topic": topic, "title": d.data["title"], "indicator": d.indicator,
               "summaries": _variants(d.data["summary"], flags, otherwise=True), "details": _variants(d.data["detail"], flags),
               "suggestions": _variants(d.data.get("suggestions", []), flags),
               "citations": sorted(d.data["citations"], key=int)}
              for topic, d in library.definitions.items()]
    titles = {t["topic"]: t["title"] for t in topics} | {UNCHECKED_TOPIC: data["data_unavailable"]["title"]}
    indicators = {t["topic"]: t["indicator"] for t in topics} | {UNCHECKED_TOPIC: "info"}
    return {"page": data, "topics": topics, "titles": titles, "indicators": indicators, "refs": library.references,
            "source_title": data["source_title"],
            "unchecked_topic": UNCHECKED_TOPIC,
            "decisions": {stage: [d for d in data["decisions"] if d["stage"] == stage]
                          for stage in [s["id"] for s in data["stages"]] + ["all"]}}


# A browser asks every host for /favicon.ico; answer with a small icon rather than a 404 in its console.
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
           'fill="#1f5f8b"/><path d="M8 3v10M5 6h6M5 10h6" stroke="#fff" stroke-width="1.5"/></svg>')


@bp.get("/favicon.ico")
def favicon():
    return Response(FAVICON, mimetype="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


SANDBOX = "https://sandbox.cds-hooks.org/"


@bp.get("/")
def index():
    avh = current_app.extensions["avh"]
    base = (avh.settings.public_url or request.host_url).rstrip("/")    # as the cards' Source links are built
    sandbox = SANDBOX + "?" + urlencode({"fhirServiceUrl": f"{base}/fhir", "patientId": "avh-01",
                                         "serviceDiscoveryURL": f"{base}/cds-services"}, safe=":/")
    return render_template("index.html", base=base, services=avh.registry, sandbox=sandbox,
                           fixture_fhir=avh.settings.fixture_fhir, auth_required=avh.settings.auth != "off")


@bp.get("/pathway")
def pathway():
    avh = current_app.extensions["avh"]
    return render_template("pathway.html", **pathway_view(avh.engine.library, page_data(avh.settings.cards_dir)))
