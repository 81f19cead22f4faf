"""Card content as data: cards/<topic>.json, checked at start-up, rendered from decisions."""
from __future__ import annotations

import copy
import json
import operator
import re
import string
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import orjson

from service.clinical.facts import Evidence, Facts
from service.clinical.markdown import literal
from service.clinical.pathway import READS, TOPIC_ORDER, Decision, Unchecked
from service.uuids import new_uuids
from service.clinical.valuesets import TOPIC_SYSTEM

INDICATOR_RANK = {"critical": 0, "warning": 1, "info": 2}
SOURCE_LABEL = "avh-cds: aggressive vertebral hemangioma pathway"
UNCHECKED_TOPIC = "data-unavailable"
UNCHECKED_TITLE = "Record partly unavailable"
MAX_LEVEL_GROUPS = 3   # beyond this a summary names the count and the extent of the levels, not each one

# Flags a card file may test, and the template variables it may use; anything else is a typo.
KNOWN_FLAGS = frozenset({
    "rapid", "stable", "lapsed", "ambulatory", "non_ambulatory", "ambulatory_unknown", "pediatric", "age_unknown",
    "no_adult_dose", "pregnant", "recurrence", "joa_recorded", "mri_thoracic_only", "multilevel_thoracic",
    "minor_trauma", "decompression_ordered", "undated_decompression", "unconfirmed_compression", "competing_cause",
    "earlier_operation", "late_radiotherapy", "referral_without_dose", "discharge", "draft_surgery",
    "draft_embolization", "draft_dexamethasone", "dex_course_taken",
    "draft_dexamethasone_set", "dex_course_used_up", "draft_without_id", "draft_changes_filed"})
KNOWN_VARIABLES = frozenset({
    "level", "ambulatory_status", "surgery_when", "surgery_date", "dex_days", "dex_start", "dex_dose", "joa_score",
    "joa_date", "age", "verification", "compression_verification", "mri_thoracic_date", "patient_ref",
    "hemangioma_ref", "compression_ref", "order_priority", "draft_orders", "earlier_date", "earlier_when",
    "competing", "undated_decompression", "decompression_ordered", "decompression_code", "decompression_display",
    "injury", "draft_days", "dex_taken", "dex_taken_days"})
# The decompression the surgery suggestion orders, by the region of the highest level named (CPT, pathway.md
# section 2): laminectomy with decompression of the spinal cord, 1 or 2 vertebral segments.
DECOMPRESSION_BY_REGION = {
    "C": ("63001", "Laminectomy with decompression of spinal cord, 1 or 2 vertebral segments; cervical"),
    "T": ("63003", "Laminectomy with decompression of spinal cord, 1 or 2 vertebral segments; thoracic"),
    "L": ("63005", "Laminectomy with decompression of spinal cord, 1 or 2 vertebral segments; lumbar"),
}


class CardDefinitionError(ValueError):
    """A card file is malformed: raised at start-up so a bad edit never reaches a clinician."""


@dataclass(frozen=True)
class CardDefinition:
    topic: str
    data: Mapping[str, Any]

    @property
    def indicator(self) -> str:
        return self.data["indicator"]


def _conditional(items: list[Mapping]) -> tuple[tuple[frozenset[str], frozenset[str], Mapping], ...]:
    """Each item of a card part (summaries, paragraphs, suggestions) with its `when` and `unless` flags as sets."""
    return tuple((frozenset(i.get("when", ())), frozenset(i.get("unless", ())), i) for i in items)


def _applying(items: tuple[tuple[frozenset[str], frozenset[str], Mapping], ...], flags: frozenset[str]) -> list[Mapping]:
    """The items whose `when` flags all hold and none of whose `unless` flags does."""
    return [item for when, unless, item in items if when <= flags and unless.isdisjoint(flags)]


@dataclass(frozen=True)
class Template:
    """A JSON template compiled once: its skeleton as JSON bytes, and where the placeholders are.

    `fill` decodes the skeleton (orjson.loads is a deep copy in C) and formats only the strings that hold a
    `{variable}`. `fill_json` gives the JSON of what `fill` gives without making it Python objects: the template's
    JSON cut at its placeholders (`json_parts`, each string that holds one JSON-escaped), joined with the variables'
    texts JSON-escaped: JSON escapes a string character by character, so the escaped parts joined are the filled
    string escaped. The answer's encoder writes it as it is (an orjson.Fragment). A
    suggestion's created resource is only ever written into the answer, so it is filled this way (its JSON was
    decoded, then encoded again, at every card).
    """
    skeleton: bytes
    holes: tuple[tuple[tuple, str], ...]       # (path to a string, its text with placeholders), in JSON order
    json_parts: tuple[bytes, ...]              # the template's JSON cut at its placeholders, b"" where one goes
    json_slots: tuple[tuple[int, str], ...]    # (index in json_parts, variable name) of each placeholder
    code_text: Any                             # the template's code.text as written (a create action's description)

    @classmethod
    def compile(cls, template: Any) -> "Template":
        holes = []
        marker = f"avh-hole-{uuid.uuid4().hex}-"

        def marked(node, path):
            """The template with each string that holds a placeholder replaced by a marker naming its hole."""
            if isinstance(node, str) and "{" in node:
                holes.append((path, node))
                return f"{marker}{len(holes) - 1}"
            if isinstance(node, list):
                return [marked(item, path + (i,)) for i, item in enumerate(node)]
            if isinstance(node, dict):
                return {key: marked(item, path + (key,)) for key, item in node.items()}
            return node

        cut = re.split(b'"' + marker.encode() + rb'(\d+)"', orjson.dumps(marked(template, ())))
        fields = [field for _, text in holes for field in string.Formatter().parse(text) if field[1] is not None]
        if [int(i) for i in cut[1::2]] != list(range(len(holes))) \
                or any(not name.isidentifier() or spec or conversion for _, name, spec, conversion in fields):
            raise CardDefinitionError(f"a resource template's placeholders are variable names alone: {template!r:.200}")
        parts, slots = [cut[0]], []        # the literal JSON between two placeholders in one part
        for (_, text), after in zip(holes, cut[2::2]):
            parts[-1] += b'"'
            for fixed, name, _, _ in string.Formatter().parse(text):
                parts[-1] += _json_text(fixed)
                if name:
                    slots.append((len(parts), name))
                    parts += [b"", b""]
            parts[-1] += b'"' + after
        code = template.get("code") if isinstance(template, dict) else None
        return cls(orjson.dumps(template), tuple(holes), tuple(parts), tuple(slots),
                   code.get("text") if isinstance(code, dict) else None)

    def fill(self, variables: Mapping[str, Any]) -> Any:
        tree = orjson.loads(self.skeleton)
        for path, text in self.holes:
            if not path:
                return text.format_map(variables)
            node = tree
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = text.format_map(variables)
        return tree

    def fill_json(self, variables: Mapping[str, Any]) -> orjson.Fragment:
        """orjson.dumps(self.fill(variables)), as a Fragment of the answer's JSON. Pass the variables as JsonTexts to
        share their escaped texts with the other templates filled from them."""
        texts = variables if type(variables) is JsonTexts else JsonTexts(variables)
        escaped = texts.escaped     # read here, not through texts.json: most variables are escaped already
        parts = list(self.json_parts)
        for i, name in self.json_slots:
            text = escaped.get(name)
            parts[i] = text if text is not None else texts.json(name)
        return orjson.Fragment(b"".join(parts))

    def description(self, variables: Mapping[str, Any]) -> Any:
        """What `fill` gives at code.text (None without one)."""
        text = self.code_text
        return text.format_map(variables) if isinstance(text, str) and "{" in text else text


class JsonTexts:
    """The variables of one answer, with each one's text JSON-escaped at its first use and kept: the templates of one
    answer share most variables (~20 uses, ~8 distinct, a call). Not a dict subclass: `%` read one through the
    subclass's `__getitem__` slot, ~1.8 k instructions a read (callgrind)."""
    __slots__ = ("variables", "escaped")

    def __init__(self, variables: Mapping[str, Any]):
        self.variables = variables
        self.escaped: dict[str, bytes] = {}

    def json(self, name: str) -> bytes:
        """The variable's text as JSON writes it between its quotes."""
        text = self.escaped.get(name)
        if text is None:
            text = self.escaped[name] = _json_text(format(self.variables[name]))
        return text


@dataclass(frozen=True)
class Text:
    """A card text with `{variable}` placeholders, cut once at its placeholders: filling it joins its literal parts
    with the variables' texts, what str.format_map gives (the library's texts are checked at start-up to hold
    variable names alone). format_map reads the whole text character by character at every call: a card's detail is
    ~0.2-1 k characters, ~40 k instructions a call for the typical chart's 4 cards (callgrind)."""
    parts: tuple[str, ...]                   # literal parts, "" where a variable goes
    slots: tuple[tuple[int, str], ...]       # (index in parts, variable name) of each placeholder

    @classmethod
    def of(cls, text: str) -> "Text":
        parts, slots = [], []
        for fixed, name, _, _ in string.Formatter().parse(text):
            parts.append(fixed)
            if name is not None:
                slots.append((len(parts), name))
                parts.append("")
        return cls(tuple(parts), tuple(slots))

    def fill(self, variables: Mapping[str, Any]) -> str:
        parts = list(self.parts)
        for i, name in self.slots:
            parts[i] = format(variables[name])
        return "".join(parts)


DESCRIPTION = operator.attrgetter("description")     # an Evidence's line in a card's "why"


def _json_text(text: str) -> bytes:
    """A string as JSON writes it between its quotes (JSON escapes it character by character)."""
    return orjson.dumps(text)[1:-1]


def _placeholders(template: Any) -> set[tuple[str, str, str | None]]:
    """(name, format spec, conversion) of each placeholder in the template's strings."""
    if isinstance(template, str):
        return {(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                if name is not None}
    if isinstance(template, list):
        return set().union(*(_placeholders(t) for t in template)) if template else set()
    if isinstance(template, dict):
        return set().union(*(_placeholders(v) for v in template.values())) if template else set()
    return set()


def _merged(base: Any, patch: Any) -> Any:
    """`patch` laid over `base`: objects merge, lists extend, anything else is replaced."""
    if isinstance(base, Mapping) and isinstance(patch, Mapping):
        return {**base, **{k: _merged(base.get(k), v) for k, v in patch.items()}}
    if isinstance(base, list) and isinstance(patch, list):
        return base + patch
    return copy.deepcopy(patch)


def _resources_of(suggestion: Mapping) -> list:
    """A suggestion's resources: `resource`, or each of `resources` (one create action each)."""
    return [suggestion["resource"]] if "resource" in suggestion else list(suggestion.get("resources", []))


def _actions(template: Mapping, compiled: list[Template], texts: JsonTexts, targets) -> list[dict]:
    """The actions of a suggestion: its template's resources filled in with the variables (texts.variables)."""
    variables = texts.variables
    kind = template.get("action", "create")
    label = template["label"]
    if kind == "create":
        return [{"type": "create", "description": c.description(variables) or label if len(compiled) > 1 else label,
                 "resource": c.fill_json(texts)} for c in compiled]
    resource = compiled[0].fill(variables) if compiled else None
    refs = [(f"{t.get('resourceType')}/{t['id']}", t) for t in targets if isinstance(t.get("id"), str) and t["id"]]
    if kind == "delete":
        return [{"type": "delete", "description": f"{label}: {ref}", "resourceId": ref} for ref, _ in refs]
    return [{"type": "update", "description": f"{label}: {ref}", "resource": _merged(copy.deepcopy(dict(t)), resource or {})}
            for ref, t in refs]


def _create_actions(item: Mapping, compiled: list[Template]) -> Template | None:
    """A create suggestion's actions written as one JSON template (what `_actions` gives, as JSON: one fill a suggestion,
    not one a resource and an object an action), when what its actions say does not depend on the variables: the
    label, or each resource's code.text as written. None for any other suggestion."""
    if item.get("action", "create") != "create" or not compiled:
        return None
    label = item["label"]
    texts = [c.code_text for c in compiled] if len(compiled) > 1 else [label]
    if any(isinstance(t, str) and "{" in t for t in texts):
        return None
    descriptions = [t.replace("{", "{{").replace("}", "}}") if isinstance(t, str) else t
                    for t in (t or label for t in texts)]
    return Template.compile([{"type": "create", "description": d, "resource": r}
                             for d, r in zip(descriptions, _resources_of(item))])


@dataclass(frozen=True)
class Suggestion:
    """A suggestion of a card file, prepared once."""
    item: Mapping                       # as the card file has it
    resources: list[Template]           # its resources compiled
    actions: Template | None            # _create_actions
    head: dict                          # label, uuid, actions, isRecommended: what the answer shows, copied a card


@dataclass(frozen=True)
class Layout:
    """What a card of a topic says for the flags it tests, placeholders unfilled: a copy of `card` is filled in."""
    card: dict                          # the card's keys in their order, what depends only on the layout written
    summary: Any                        # variables -> the summary (Text.fill, or format_map for one with a format spec)
    detail: Text                        # its detail paragraphs as one text, each followed by a blank line
    suggestions: tuple[Suggestion, ...]
    sources: str                        # the detail's last paragraph, after a blank line


def _level_text(levels: tuple[str, ...]) -> str:
    """('T5', 'T6', 'T7', 'T9') -> 'T5-T7, T9'; many scattered levels -> '8 levels, C3 to L3' (summaries < 140)."""
    if len(levels) < 2:
        return levels[0] if levels else "the involved level"     # most charts: one level, one run
    runs: list[list[str]] = []
    for lv in levels:   # sorted C, T, L and by number
        last = runs[-1][-1] if runs else None
        if last and last[0] == lv[0] and int(lv[1:]) == int(last[1:]) + 1:
            runs[-1].append(lv)
        else:
            runs.append([lv])
    if len(runs) > MAX_LEVEL_GROUPS:
        return f"{len(levels)} levels, {levels[0]} to {levels[-1]}"
    return ", ".join(run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def _ago(days: int | None, date: str) -> str:
    """Time since an event on the scale a clinician reads it: '5 days ago', '4 months ago', '10 years ago'."""
    if days is None:
        return "on an unknown date"
    if days < 0:
        return f"on {date}"
    if days < 2:
        return ("today", "1 day ago")[days]
    if days < 60:
        return f"{days} days ago"
    if days < 730:
        return f"{days // 30} months ago"
    return f"{days // 365} years ago"


def _date_of(ev: Evidence | None) -> str:
    return ev.when.isoformat() if ev and ev.when else "an unknown date"


def template_variables(facts: Facts) -> dict[str, Any]:
    """Every variable a card may use, worked out for each card set (what a value is read from, read once)."""
    surgery_date = _date_of(facts.surgery)
    earlier = facts.earlier_operation
    earlier_date = _date_of(earlier)
    levels = facts.levels
    code, display = DECOMPRESSION_BY_REGION.get(levels[0][0] if levels else "T", DECOMPRESSION_BY_REGION["T"])
    earlier_days = (facts.today - earlier.when).days if earlier and earlier.when and facts.today else None
    dex, dex_days, joa, mri = facts.dexamethasone, facts.dexamethasone_days, facts.joa, facts.mri_thoracic
    competing, undated, ordered, injury = facts.competing, facts.undated_decompression, facts.decompression_ordered, facts.injury
    return {
        "earlier_date": earlier_date,
        "earlier_when": _ago(earlier_days, earlier_date),
        "competing": "; ".join([f"{literal(e.label)} ({e.ref})" for e in competing]) if competing else "none",
        "compression_verification": facts.compression_verification,
        "undated_decompression": undated.describe() if undated else "",
        "decompression_ordered": ordered.describe() if ordered else "",
        "decompression_code": code,
        "decompression_display": display,
        "injury": injury.describe() if injury else "",
        "dex_dose": ("daily dose not stated in structured form" if dex.daily_dose_mg is None
                     else f"up to {dex.daily_dose_mg:g} mg/day") if dex is not None else "",
        "level": _level_text(levels),
        "ambulatory_status": (facts.ambulatory_status or "ambulatory status not recorded").replace("-", " "),
        "surgery_when": _ago(facts.days_since_surgery, surgery_date),
        "surgery_date": surgery_date,
        "dex_days": dex_days if dex_days is not None else "?",
        "dex_taken": dex_days or 0,     # at order time: the course days before the draft's
        "dex_start": dex.course_start.isoformat() if dex and dex.course_start else "?",
        "joa_score": f"{joa[0]:g}" if joa else "?",
        "joa_date": joa[1].when.isoformat() if joa and joa[1].when else "date not recorded",
        "age": facts.age if facts.age is not None else "unknown",
        "verification": facts.hemangioma_verification,
        "mri_thoracic_date": mri.when.isoformat() if mri and mri.when else "date not recorded",
        "patient_ref": facts.patient_ref,
        "hemangioma_ref": facts.hemangioma_ref,
        "compression_ref": facts.compression.ref if facts.compression else facts.hemangioma_ref,
        "order_priority": "stat" if facts.rapid_deterioration else "urgent",
    }


class CardLibrary:
    def __init__(self, definitions: dict[str, CardDefinition], references: Mapping[str, Mapping],
                 override_reasons: list[dict]):
        self.definitions = definitions
        self.references = references
        self.override_reasons = override_reasons
        # What every rendering of a topic shares, prepared once. The override reasons and links are written into
        # the answer as they are: JSON written once (orjson.Fragment, immutable bytes), not objects copied per card.
        self._override_reasons = orjson.Fragment(orjson.dumps(override_reasons))
        self._links = {topic: orjson.Fragment(orjson.dumps(links)) if links else None
                       for topic in definitions for links in [self._link_list(topic)]}
        self._titles = {topic: d.data["title"] for topic, d in definitions.items()}
        self._sources = {topic: "**Sources**\n" + "\n".join(
            f"- [{c}] {references[c]['citation']}" for c in sorted(d.data["citations"], key=int))
            for topic, d in definitions.items()}
        self._resources = {(topic, s["id"]): [Template.compile(r) for r in _resources_of(s)]
                           for topic, d in definitions.items() for s in d.data.get("suggestions", []) if _resources_of(s)}
        self._suggestions = {(topic, s["id"]): self._suggestion_of(topic, s)
                             for topic, d in definitions.items() for s in d.data.get("suggestions", [])}
        self._parts = {topic: {part: _conditional(d.data.get(part, [])) for part in ("summary", "detail", "suggestions")}
                       for topic, d in definitions.items()}
        self._flags = {topic: frozenset().union(*(when | unless for items in parts.values() for when, unless, _ in items))
                       for topic, parts in self._parts.items()}           # the flags a topic's card tests
        self._layouts: dict[tuple[str, frozenset[str]], Layout] = {}   # by _layout
        # Where a topic's card shows in an answer: by indicator (critical first), then in TOPIC_ORDER; the
        # data-unavailable card (info) after every other.
        self._rank = {topic: (INDICATOR_RANK[d.indicator], TOPIC_ORDER.index(topic) if topic in TOPIC_ORDER
                              else len(TOPIC_ORDER)) for topic, d in definitions.items()}
        self.topics = frozenset(definitions) | {UNCHECKED_TOPIC}       # every topic a card of this library can have
        # (topic, label) -> the suggestion's id in its card file: what the record of issued suggestions keeps.
        self.suggestion_ids = {(topic, s["label"]): s["id"]
                               for topic, d in definitions.items() for s in d.data.get("suggestions", [])}

    @classmethod
    def load(cls, directory: Path) -> "CardLibrary":
        schema = json.loads((directory / "schema.json").read_text())
        references = json.loads((directory / "references.json").read_text())["references"]
        override_reasons = json.loads((directory / "override-reasons.json").read_text())["overrideReasons"]
        definitions = {}
        for topic in TOPIC_ORDER:
            path = directory / f"{topic}.json"
            if not path.exists():
                raise CardDefinitionError(f"{path}: missing card definition for topic {topic}")
            try:
                data = json.loads(path.read_text())
                jsonschema.validate(data, schema)
            except (json.JSONDecodeError, jsonschema.ValidationError) as exc:
                raise CardDefinitionError(f"{path}: {getattr(exc, 'message', exc)}") from exc
            cls._check(path, topic, data, references)
            definitions[topic] = CardDefinition(topic, data)
        return cls(definitions, references, override_reasons)

    @staticmethod
    def _check(path: Path, topic: str, data: Mapping, references: Mapping) -> None:
        if data["topic"] != topic:
            raise CardDefinitionError(f"{path}: topic {data['topic']!r} does not match the file name")
        unknown_refs = [c for c in data["citations"] if c not in references]
        if unknown_refs:
            raise CardDefinitionError(f"{path}: citations {unknown_refs} are not in references.json")
        items = data["summary"] + data["detail"] + data.get("suggestions", [])
        flags = {f for item in items for f in item.get("when", []) + item.get("unless", [])}
        if flags - KNOWN_FLAGS:
            raise CardDefinitionError(f"{path}: unknown flags {sorted(flags - KNOWN_FLAGS)}")
        fields = _placeholders(items)
        names = {name for name, _, _ in fields if name}
        if names - KNOWN_VARIABLES:
            raise CardDefinitionError(f"{path}: unknown template variables {sorted(names - KNOWN_VARIABLES)}")
        detail_fields = _placeholders(data["detail"])   # filled as a Text; summaries by format_map
        if any(not name for name, _, _ in fields) or any(spec or conversion for _, spec, conversion in detail_fields):
            raise CardDefinitionError(f"{path}: a placeholder is a variable name alone (render's Text fills no other)")
        if "when" in data["summary"][-1]:
            raise CardDefinitionError(f"{path}: the last summary must have no 'when' (it is the default)")

    def _suggestion_of(self, topic: str, item: Mapping) -> Suggestion:
        compiled = self._resources.get((topic, item["id"]), [])
        head = {"label": item["label"], "uuid": "", "actions": None}
        if "isRecommended" in item:
            head["isRecommended"] = item["isRecommended"]
        return Suggestion(item, compiled, _create_actions(item, compiled), head)

    def _layout(self, topic: str, flags: frozenset[str]) -> Layout:
        """What a card of the topic says for these flags. Worked out once per topic and flags the topic tests (a few
        dozen at most), not once per card: formatting the joined paragraphs gives the paragraphs formatted one by one,
        joined (the library's texts are checked to be format strings at start-up)."""
        key = (topic, self._flags[topic].intersection(flags))
        layout = self._layouts.get(key)
        if layout is None:
            parts, flags, data = self._parts[topic], key[1], self.definitions[topic].data
            summary = _applying(parts["summary"], flags)[0]["text"]
            plain = not any(spec or conversion for _, spec, conversion in _placeholders(summary))
            suggestions = tuple(self._suggestions[(topic, s["id"])] for s in _applying(parts["suggestions"], flags))
            card = {"uuid": "", "summary": "", "indicator": data["indicator"], "detail": "", "source": None,
                    "overrideReasons": self._override_reasons}
            if suggestions:
                card["suggestions"] = None
                card["selectionBehavior"] = data["selectionBehavior"]
            if self._links[topic] is not None:
                card["links"] = self._links[topic]
            layout = self._layouts[key] = Layout(
                card, Text.of(summary).fill if plain else summary.format_map,
                Text.of("".join(p["text"] + "\n\n" for p in _applying(parts["detail"], flags))), suggestions,
                "\n\n" + self._sources[topic])
        return layout

    def in_card_order(self, decisions: list[Decision]) -> list[Decision]:
        """The decisions in the order of their cards in an answer (the data-unavailable card comes after them all)."""
        rank = self._rank
        return sorted(decisions, key=lambda d: rank[d.topic])

    def _link_list(self, topic: str) -> list[dict]:
        refs = (self.references[c] for c in self.definitions[topic].data["citations"])
        return [{"label": r["label"], "url": r["url"], "type": "absolute"} for r in refs if "url" in r]

    def render(self, decision: Decision, facts: Facts, source_url: str, notes: list[str] | None = None,
               patient_variables: Mapping[str, Any] | None = None) -> dict:
        """`patient_variables`: template_variables(facts), when the caller renders several cards of one patient (as
        JsonTexts, the cards share their escaped texts). The card and its suggestions get their uuids from give_uuids,
        with the answer's other cards."""
        topic = decision.topic
        layout = self._layouts.get((topic, self._flags[topic].intersection(decision.flags)))
        if layout is None:
            layout = self._layout(topic, decision.flags)
        if patient_variables is None:
            patient_variables = template_variables(facts)
        texts = patient_variables if type(patient_variables) is JsonTexts else JsonTexts(patient_variables)
        variables = texts.variables
        if decision.variables:
            variables = {**variables, **decision.variables}
            texts = JsonTexts(variables)
        why = dict.fromkeys(map(DESCRIPTION, decision.evidence))   # each entry's line once, in order
        card = layout.card.copy()
        card["summary"] = layout.summary(variables)[:139]
        card["detail"] = "".join((layout.detail.fill(variables), "**Why am I seeing this?**\n- " if why else
                                  "**Why am I seeing this?**\n", "\n- ".join(why), *(["\n\n", "\n\n".join(notes)]
                                  if notes else ()), layout.sources))
        card["source"] = {"label": SOURCE_LABEL, "url": f"{source_url}#{topic}",
                          "topic": {"system": TOPIC_SYSTEM, "code": topic, "display": self._titles[topic]}}
        if layout.suggestions:
            suggestions = []    # a loop, not a comprehension (a function object made and called, per card)
            for prepared in layout.suggestions:
                if prepared.actions is None or decision.variables:
                    suggestion = self._suggestion(prepared, texts, decision)
                    if suggestion is not None:
                        suggestions.append(suggestion)
                else:           # most suggestions: a create suggestion's actions, one JSON template filled
                    suggestion = prepared.head.copy()
                    suggestion["actions"] = prepared.actions.fill_json(texts)
                    suggestions.append(suggestion)
            if suggestions:
                card["suggestions"] = suggestions
            else:
                del card["suggestions"], card["selectionBehavior"]
        return card

    def _suggestion(self, prepared: Suggestion, texts: JsonTexts, decision: Decision) -> dict | None:
        """A suggestion's actions: supplied by the decision, or built from the template; its uuid is give_uuids'.

        `create` fills the template's resources; `update` merges it into each draft order the decision
        names as the suggestion's targets; `delete` removes each target. No action, no suggestion.
        """
        given = decision.variables     # empty for most decisions: no lookups in it then
        item = prepared.item
        actions = given.get("actions", {}).get(item["id"]) if given else None
        if actions is None:
            if prepared.actions is not None:
                actions = prepared.actions.fill_json(texts)
            else:
                actions = _actions(item, prepared.resources, texts,
                                   given.get("targets", {}).get(item["id"], ()) if given else ())
        if not actions:
            return None
        suggestion = prepared.head.copy()
        suggestion["actions"] = actions
        return suggestion

    def unchecked_card(self, unchecked: list[Unchecked], source_url: str, age_unread: bool = False) -> dict:
        """The data-unavailable card: Conditions that could not be read and might put the patient on the pathway,
        the topics not decided for want of data and, with `age_unread` (the Patient could not be had), that the
        cards given are those of a patient of unknown age. Its uuid is given by give_uuids."""
        unreadable = [item for u in unchecked for item in u.unreadable]
        topics = ", ".join(self.definitions[u.topic].data["title"] for u in unchecked if u.topic in self.definitions)
        missing = sorted({t for u in unchecked if not u.unreadable for t in u.missing} | ({"Patient"} if age_unread else set()))
        paragraphs = []
        if unreadable:
            refs = ", ".join(item.split(":", 1)[0] for item in unreadable)
            summary = f"Record entry could not be read ({refs}): the pathway may apply; review the problem list"
            paragraphs.append(
                "avh-cds could not read a Condition whose code is a vertebral hemangioma or a spinal cord "
                "compression, so it cannot tell whether this patient is on the hemangioma pathway. Silence here "
                "would not mean 'nothing to say'. Not valid FHIR R4, so not read:\n"
                + "\n".join(f"- {item}" for item in unreadable))
        else:
            consequence = "some pathway checks were skipped" if topics else "the patient's age is unknown"
            summary = f"Part of the record could not be read ({', '.join(missing)}): {consequence}"
        if age_unread:
            paragraphs.append("Without the Patient record the patient's age is unknown: the cards are given as for a "
                              "patient of unknown age; check the age before acting on a dose. Reopen the chart to retry.")
        if topics and missing:
            paragraphs.append(
                f"avh-cds could not read this patient's {', '.join(missing)} data from the EHR, so it did not "
                f"decide on: {topics}. These checks rely on what is *absent* from the record, and a failed "
                "query is not an absence. Review them by hand, or reopen the chart to retry.")
        return {
            "uuid": "",
            "summary": summary[:139],
            "indicator": "info",
            "detail": "\n\n".join(paragraphs),
            "source": {"label": SOURCE_LABEL, "url": f"{source_url}#{UNCHECKED_TOPIC}",
                       "topic": {"system": TOPIC_SYSTEM, "code": UNCHECKED_TOPIC, "display": UNCHECKED_TITLE}},
            "overrideReasons": self._override_reasons,
        }


def left_out_notes(decision: Decision, facts: Facts) -> list[str]:
    """Name invalid resources that could have changed this card (of the types its decision reads)."""
    if not facts.left_out:          # most charts: nothing left out, nothing to filter per card
        return []
    relevant = [lo for lo in facts.left_out if lo.resource_type in READS[decision.topic] and not lo.could_change_scope]
    if not relevant:
        return []
    items = "\n".join(f"- {lo.ref}: {lo.reason}" for lo in relevant)
    return ["**Left out of this decision** (not valid FHIR R4, so not read):\n" + items]


def give_uuids(cards: list[dict]) -> list[dict]:
    """Give each card and each of its suggestions a fresh uuid: one read of the random bytes for the answer."""
    uuids = iter(new_uuids(len(cards) + sum([len(c.get("suggestions", ())) for c in cards])))
    for card in cards:
        card["uuid"] = next(uuids)
        for suggestion in card.get("suggestions", ()):
            suggestion["uuid"] = next(uuids)
    return cards
