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
