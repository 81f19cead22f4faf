"""Card JSON templates compiled once, filled per card."""
import pytest

from service.clinical.cards import Template


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


def test_rendered_cards_do_not_share_override_reasons(app):
    library = app.extensions["avh"].engine.library
    assert library.links("surgical-decompression") is not library.links("surgical-decompression")
    assert library._override_reasons.copy() == library.override_reasons
    assert library._override_reasons.copy() is not library._override_reasons.copy()
    assert library._override_reasons.copy()[0] is not library._override_reasons.copy()[0]


def test_override_reasons_and_links_are_copied_per_card_so_must_be_flat():
    from service.clinical.cards import CardDefinitionError, FlatList
    assert FlatList(({"code": "a", "display": "A"},)).copy() == [{"code": "a", "display": "A"}]
    with pytest.raises(CardDefinitionError):
        FlatList(({"code": "a", "coding": [{"code": "b"}]},))
