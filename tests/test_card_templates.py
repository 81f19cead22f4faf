"""Card JSON templates compiled once, filled per card."""
import orjson
import pytest

from service.clinical.cards import Template
from service.clinical.facts import Facts
from service.clinical.pathway import Decision

FACTS = Facts(patient_ref="Patient/p1", in_pathway=True, levels=("T7",))


def test_fill_replaces_placeholders_at_any_depth_and_keeps_the_rest():
    template = {"resourceType": "ServiceRequest", "priority": "{order_priority}",
                "subject": {"reference": "{patient_ref}"}, "note": [{"text": "at {level}, {level}"}, {"n": 3}],
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "387731002"}]}}
    filled = Template.compile(template).fill({"order_priority": "stat", "patient_ref": "Patient/p1", "level": "T7"})
    assert filled == {**template, "priority": "stat", "subject": {"reference": "Patient/p1"},
                      "note": [{"text": "at T7, T7"}, {"n": 3}]}


def test_each_fill_is_a_fresh_copy():
    compiled = Template.compile({"a": [{"b": "{x}"}], "c": {"d": 1}})
    first = compiled.fill({"x": "1"})
    first["c"]["d"] = 99
    first["a"].append("junk")
    assert compiled.fill({"x": "2"}) == {"a": [{"b": "2"}], "c": {"d": 1}}


def test_a_bare_string_template():
    assert Template.compile("{level} only").fill({"level": "L1"}) == "L1 only"
    assert Template.compile([]).fill({}) == []


ODD_TEXTS = ("", "T7", 'a "quoted" \\ back\\slash', "line\nbreak\ttab\x00\x1f", "é ü 中文 🙂", "</script>", "{not a hole}",
             "\u2028\u2029", "a" * 300)


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_a_template_written_as_json_is_what_filling_it_and_writing_it_gives(app, text):
    """fill_json cuts the template's JSON at each placeholder's string: the same bytes as orjson writing the filled
    tree, for every resource template of the card library and any text a variable may hold."""
    from service.clinical.cards import KNOWN_VARIABLES
    library = app.extensions["avh"].engine.library
    variables = dict.fromkeys(KNOWN_VARIABLES, text) | {"age": 7, "dex_days": 12}
    templates = [t for compiled in library._resources.values() for t in compiled]
    assert len(templates) > 5 and all(t.holes for t in templates)
    for template in templates:
        assert orjson.dumps(template.fill_json(variables)) == orjson.dumps(template.fill(variables))
        assert template.description(variables) == template.fill(variables).get("code", {}).get("text")


def test_json_templates_of_odd_shapes():
    for template in ({"a": ["{x}", {"b": "{x}{x}", "c": [1, 2.5, None, True]}], "{x}": "{x}"}, "{x}", ["{x}"], [],
                     {"code": {"text": "{x} and more"}}, {"code": "{x}"}, {"x": "no hole"}):
        compiled = Template.compile(template)
        for text in ODD_TEXTS:
            assert orjson.dumps(compiled.fill_json({"x": text})) == orjson.dumps(compiled.fill({"x": text}))


def test_every_card_writes_the_override_reasons_and_its_topics_links(app):
    """Written once at start-up (orjson.Fragment), the same JSON in every card."""
    from service.fastjson import encode
    library = app.extensions["avh"].engine.library
    for topic in library.definitions:
        card = orjson.loads(encode(library.render(Decision(topic, ()), FACTS, "http://x/p")))
        assert card["overrideReasons"] == library.override_reasons
        assert card.get("links", []) == library._link_list(topic)
    assert any(library._link_list(topic) for topic in library.definitions)


def _before(library, decision, variables, notes):
    """A card's summary, detail and suggestions as render chose and formatted them part by part, every card."""
    from service.clinical.cards import JsonTexts, _applying
    parts, flags = library._parts[decision.topic], frozenset(decision.flags)
    summary = _applying(parts["summary"], flags)[0]["text"].format_map(variables)
    paragraphs = [p["text"].format_map(variables) for p in _applying(parts["detail"], flags)]
    why = dict.fromkeys(e.describe() for e in decision.evidence)
    paragraphs.append("**Why am I seeing this?**\n" + "\n".join(f"- {line}" for line in why))
    paragraphs += notes
    paragraphs.append(library._sources[decision.topic])
    labels = [s["label"] for s in _applying(parts["suggestions"], flags)
              if library._suggestion(library._suggestions[(decision.topic, s["id"])], JsonTexts(variables), decision)
              is not None]
    return summary[:139], "\n\n".join(paragraphs), labels


def test_a_cards_layout_worked_out_once_per_topic_and_flags_renders_as_part_by_part(app):
    """render takes a card's summary, detail paragraphs (one text) and suggestions from a layout kept per topic and
    the flags it tests: the same card as choosing and formatting them part by part, for any flags."""
    import random
    from service.clinical.cards import KNOWN_FLAGS, KNOWN_VARIABLES, template_variables
    from service.clinical.facts import Evidence
    library = app.extensions["avh"].engine.library
    variables = {**dict.fromkeys(KNOWN_VARIABLES, "{x}"), **template_variables(FACTS)}    # and the order hooks' own
    evidence = (Evidence("Condition/c1", "Vertebral hemangioma"), Evidence("Condition/c2", "Cord compression"))
    chosen = random.Random(18)
    compared = set()
    for topic in library.definitions:
        tested = sorted(library._flags[topic])
        for _ in range(60):
            flags = frozenset(chosen.sample(tested, chosen.randint(0, len(tested)))
                              + chosen.sample(sorted(KNOWN_FLAGS), 2))
            for notes in ([], ["**Left out of this decision** (not valid FHIR R4, so not read):\n- Condition/x: y"]):
                decision = Decision(topic, evidence[:chosen.randint(0, 2)], flags)
                card = library.render(decision, FACTS, "http://x/p", notes, variables)
                assert (card["summary"], card["detail"], [s["label"] for s in card.get("suggestions", ())]) == \
                    _before(library, decision, variables, notes)
                compared.add((topic, card["summary"], card["detail"]))
    assert len(compared) > 100


@pytest.mark.parametrize("text", ["{level}", "at {level}, {level}.", "{{braces}} {level} }}{{", "", "plain",
                                  "{level}{age}", "é {age} 🙂\n\n"])
def test_a_text_cut_at_its_placeholders_fills_as_format_map(text):
    from service.clinical.cards import Text
    for value in ODD_TEXTS + (7, 12.5):
        variables = {"level": value, "age": value}
        assert Text.of(text).fill(variables) == text.format_map(variables)


@pytest.mark.parametrize("placeholder", ["{level:>9}", "{level!r}", "{}"])
def test_a_card_text_whose_placeholder_is_more_than_a_name_is_refused_at_start_up(tmp_path, placeholder):
    """render fills a card's texts by joining their parts with the variables' texts: a format spec, a conversion or
    a positional field would be filled otherwise than format_map did, so the library refuses them when it loads."""
    import json
    import shutil
    from pathlib import Path
    from service.clinical.cards import CardDefinitionError, CardLibrary
    cards = tmp_path / "cards"
    shutil.copytree(Path(__file__).resolve().parents[1] / "cards", cards)
    path = cards / "spine-mri.json"
    data = json.loads(path.read_text())
    data["detail"][0]["text"] += " " + placeholder
    path.write_text(json.dumps(data))
    with pytest.raises(CardDefinitionError, match="a variable name alone"):
        CardLibrary.load(cards)


@pytest.mark.parametrize("placeholder", ["{level:>9}", "{level!r}"])
def test_a_summary_whose_placeholder_has_a_format_spec_still_loads_and_renders_as_format_map(tmp_path, placeholder):
    """Only the detail is filled by Text: a summary (format_map at every card) keeps what format_map reads."""
    import json
    import shutil
    from pathlib import Path
    from service.clinical.cards import CardLibrary, template_variables
    cards = tmp_path / "cards"
    shutil.copytree(Path(__file__).resolve().parents[1] / "cards", cards)
    path = cards / "spine-mri.json"
    data = json.loads(path.read_text())
    data["summary"][-1]["text"] = "MRI at " + placeholder
    path.write_text(json.dumps(data))
    variables = template_variables(FACTS)
    card = CardLibrary.load(cards).render(Decision("spine-mri", ()), FACTS, "http://x/p")
    assert card["summary"] == ("MRI at " + placeholder).format_map(variables)
