"""set_at_once: a frozen dataclass's fields set by one __dict__.update, the objects dataclasses' own __init__ makes."""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field, fields

import pytest

from service.api import answer
from service.clinical import facts, pathway, record
from service.clinical.frozen import set_at_once

DECORATED = (facts.Facts, facts.Evidence, pathway.Decision, pathway.Fire, facts.Dexamethasone, facts.Entries,
             facts.Deterioration, facts.Pregnancy, facts.ChartFacts, record.PatientRecord, answer.Answer)


def _reference(cls: type) -> type:
    """The same fields as a frozen dataclass with dataclasses' own __init__."""
    return dataclasses.make_dataclass(cls.__name__, [(f.name, f.type, field(default=f.default,
                                                                           default_factory=f.default_factory))
                                                     for f in fields(cls)], frozen=True)


@pytest.mark.parametrize("cls", DECORATED, ids=lambda cls: cls.__name__)
def test_the_chart_objects_take_the_parameters_dataclasses_gives_them(cls):
    reference = _reference(cls)
    assert cls.__init__ is not reference.__init__ and cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"
    assert _parameters(cls) == _parameters(reference)
    required = {f.name: object() for f in fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    assert list(vars(cls(**required)).items()) == list(vars(reference(**required)).items())


def _parameters(cls: type) -> list[tuple]:
    """Of __init__, each parameter's name, kind and default (as its repr: a factory's sentinel reads `<factory>`)."""
    return [(p.name, p.kind, repr(p.default)) for p in inspect.signature(cls.__init__).parameters.values()]


@set_at_once
@dataclass(frozen=True)
class Sample:
    name: str
    items: tuple = ()
    notes: dict = field(default_factory=dict)
    kind: str | None = None


Plain = _reference(Sample)     # the same class, with dataclasses' own __init__


@pytest.mark.parametrize("args, named", [(("a",), {}), (("a", (1,)), {"kind": "k"}), ((), {"name": "a", "notes": {}}),
                                         (("a", (), {"x": 1}, "k"), {}), ((), {"kind": None, "name": "b"})])
def test_the_same_object_as_the_generated_init_makes(args, named):
    made, plain = Sample(*args, **named), Plain(*args, **named)
    assert list(vars(made).items()) == list(vars(plain).items())
    assert made == Sample(*args, **named) and repr(made) == repr(plain)


def test_a_default_factory_makes_a_new_value_each_time_and_the_object_stays_frozen():
    first, second = Sample("a"), Sample("a")
    assert first.notes == {} and first.notes is not second.notes
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.name = "b"
    assert dataclasses.replace(first, kind="k") == Sample("a", kind="k")


@pytest.mark.parametrize("args, named", [((), {}), (("a",), {"name": "b"}), (("a",), {"other": 1}),
                                         (("a", (), {}, None, 5), {})])
def test_wrong_arguments_are_the_type_errors_they_were(args, named):
    with pytest.raises(TypeError):
        Plain(*args, **named)
    with pytest.raises(TypeError):
        Sample(*args, **named)


def test_a_class_it_does_not_make_as_dataclasses_would_is_refused():
    class Later:
        name: str

        def __post_init__(self):
            pass

    class Keyword:
        name: str = field(kw_only=True)

    class Uninit:
        name: str = field(init=False, default="x")

    class Mutable:
        name: str

    for cls, frozen in ((Later, True), (Keyword, True), (Uninit, True), (Mutable, False)):
        with pytest.raises(TypeError):
            set_at_once(dataclass(frozen=frozen)(cls))
