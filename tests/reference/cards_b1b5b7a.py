"""Rendering the cards as it was at b1b5b7a: the oracle of tests/test_cards_differential.py, which checks that a
card's layout prepared once, a create suggestion's actions written as one template and the decisions put in card
order before rendering give the same answers. Only what branch `render7` rewrote is kept here (the old render,
suggestion, layout, template cut and sort); the rest is the service's own, imported. Not imported by the service;
delete it with the differential test when the cards next change on purpose (do not edit it to match)."""
from __future__ import annotations

import re
import string
import uuid
from typing import Any, Mapping

import orjson

from service.clinical import cards
from service.clinical.cards import (DESCRIPTION, INDICATOR_RANK, SOURCE_LABEL, TOPIC_SYSTEM, JsonTexts, Template,
                                    Text, _actions, _applying, _json_text, _resources_of, give_uuids, left_out_notes,
                                    template_variables)
from service.clinical.pathway import TOPIC_ORDER, Decision


def _formatted(text: str, variables: Mapping[str, Any]) -> str:
    return text.format_map(variables) if "{" in text or "}" in text else text


def compile_template(template: Any) -> Template:
    """Template.compile as it was: each placeholder's string cut in parts of its own."""
    holes = []
    marker = f"avh-hole-{uuid.uuid4().hex}-"

    def marked(node, path):
        if isinstance(node, str) and "{" in node:
            holes.append((path, node))
            return f"{marker}{len(holes) - 1}"
        if isinstance(node, list):
            return [marked(item, path + (i,)) for i, item in enumerate(node)]
        if isinstance(node, dict):
            return {key: marked(item, path + (key,)) for key, item in node.items()}
        return node

    cut = re.split(b'"' + marker.encode() + rb'(\d+)"', orjson.dumps(marked(template, ())))
    parts, slots = [cut[0]], []
    for (_, text), after in zip(holes, cut[2::2]):
        parts.append(b'"')
        for literal, name, _, _ in string.Formatter().parse(text):
            parts.append(_json_text(literal))
            if name:
                slots.append((len(parts), name))
                parts.append(b"")
        parts.append(b'"' + after)
    code = template.get("code") if isinstance(template, dict) else None
    return Template(orjson.dumps(template), tuple(holes), tuple(parts), tuple(slots),
                    code.get("text") if isinstance(code, dict) else None)


class CardLibrary(cards.CardLibrary):
    """The library with b1b5b7a's render."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._resources = {(topic, s["id"]): [compile_template(r) for r in _resources_of(s)]
                           for topic, d in self.definitions.items() for s in d.data.get("suggestions", [])
                           if _resources_of(s)}
        self._old_layouts: dict = {}

    def _old_layout(self, topic: str, flags: frozenset[str]):
        key = (topic, self._flags[topic].intersection(flags))
        layout = self._old_layouts.get(key)
        if layout is None:
            parts, flags = self._parts[topic], key[1]
            layout = self._old_layouts[key] = (_applying(parts["summary"], flags)[0]["text"],
                                               Text.of("".join(p["text"] + "\n\n" for p in _applying(parts["detail"], flags))),
                                               tuple(_applying(parts["suggestions"], flags)))
        return layout

    def render(self, decision: Decision, facts, source_url: str, notes=None, patient_variables=None) -> dict:
        data = self.definitions[decision.topic].data
        summary, detail, applying = self._old_layout(decision.topic, decision.flags)
        if patient_variables is None:
            patient_variables = template_variables(facts)
        texts = patient_variables if type(patient_variables) is JsonTexts else JsonTexts(patient_variables)
        variables = texts.variables
        if decision.variables:
            variables = {**variables, **decision.variables}
            texts = JsonTexts(variables)
        why = dict.fromkeys(map(DESCRIPTION, decision.evidence))
        paragraphs = ["**Why am I seeing this?**\n" + ("- " + "\n- ".join(why) if why else "")]
        paragraphs += notes or []
        paragraphs.append(self._sources[decision.topic])
        suggestions = []
        for template in applying:
            suggestion = self._old_suggestion(template, texts, decision)
            if suggestion is not None:
                suggestions.append(suggestion)
        card = {
            "uuid": "",
            "summary": _formatted(summary, variables)[:139],
            "indicator": data["indicator"],
            "detail": detail.fill(variables) + "\n\n".join(paragraphs),
            "source": {"label": SOURCE_LABEL, "url": f"{source_url}#{decision.topic}",
                       "topic": {"system": TOPIC_SYSTEM, "code": decision.topic, "display": data["title"]}},
            "overrideReasons": self._override_reasons,
        }
        if suggestions:
            card["suggestions"] = suggestions
            card["selectionBehavior"] = data["selectionBehavior"]
        links = self._links[decision.topic]
        if links is not None:
            card["links"] = links
        return card

    def _old_suggestion(self, template: Mapping, texts: JsonTexts, decision: Decision) -> dict | None:
        given = decision.variables
        actions = given.get("actions", {}).get(template["id"]) if given else None
        if actions is None:
            actions = _actions(template, self._resources.get((decision.topic, template["id"]), []), texts,
                               given.get("targets", {}).get(template["id"], ()) if given else ())
        if not actions:
            return None
        suggestion = {"label": template["label"], "uuid": "", "actions": actions}
        if "isRecommended" in template:
            suggestion["isRecommended"] = template["isRecommended"]
        return suggestion


def sort_cards(cards_: list[dict]) -> list[dict]:
    return sorted(cards_, key=lambda c: (INDICATOR_RANK[c["indicator"]],
                                         _TOPIC_RANK.get(c["source"]["topic"]["code"], len(_TOPIC_RANK))))


_TOPIC_RANK = {t: i for i, t in enumerate(TOPIC_ORDER)}


def engine_cards(library: CardLibrary, decisions, unchecked, facts, source_url: str) -> list[dict]:
    """Engine.cards as it was: rendered in the decisions' order, uuids given, then sorted."""
    variables = JsonTexts(template_variables(facts))
    found = [library.render(d, facts, source_url, left_out_notes(d, facts), variables) for d in decisions]
    age_unread = "Patient" in facts.unavailable and bool(decisions)
    if unchecked or age_unread:
        found.append(library.unchecked_card(unchecked, source_url, age_unread))
    return sort_cards(give_uuids(found))
