"""Human-readable pages: what each card topic says and where it comes from (cards' source.url)."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, render_template_string

bp = Blueprint("pages", __name__)

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>avh-cds pathway</title></head>
<body><h1>avh-cds: aggressive vertebral hemangioma compressing the spinal cord</h1>
<p>Every card avh-cds shows traces back to one guideline summary: {{ source }}.</p>
{% for card in cards %}<section id="{{ card.topic }}"><h2>{{ card.title }} <small>({{ card.topic }}, {{ card.indicator }})</small></h2>
{% for p in card.detail %}<p>{{ p.text }}</p>{% endfor %}
<p>Sources: {% for c in card.citations %}{% set r = refs[c] %}{% if r.url %}<a href="{{ r.url }}">{{ r.label }}</a>{% else %}{{ r.label }}{% endif %}{% if not loop.last %}; {% endif %}{% endfor %}</p>
</section>{% endfor %}
<section id="data-unavailable"><h2>Record partly unavailable</h2><p>Shown when the EHR could not deliver part of the
record: checks that rely on the absence of data are skipped rather than guessed; without the Patient record the
cards are those of a patient of unknown age.</p></section>
</body></html>"""


# A browser asks every host for /favicon.ico; answer with a small icon rather than a 404 in its console.
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
           'fill="#1f5f8b"/><path d="M8 3v10M5 6h6M5 10h6" stroke="#fff" stroke-width="1.5"/></svg>')


@bp.get("/favicon.ico")
def favicon():
    return Response(FAVICON, mimetype="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


@bp.get("/pathway")
def pathway():
    library = current_app.extensions["avh"].engine.library
    return render_template_string(PAGE, cards=[d.data for d in library.definitions.values()],
                                  refs=library.references, source="Management of Aggressive Vertebral Hemangioma "
                                  "with Spinal Cord Compression (guideline summary, 2026)")
