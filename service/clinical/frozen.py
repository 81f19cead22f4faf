"""Frozen dataclasses made without an object.__setattr__ a field (the objects a chart's derivation makes)."""
from __future__ import annotations

from dataclasses import MISSING, fields


class _Factory:
    """The default of a parameter whose field has a default factory (as dataclasses' own __init__ has one)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def set_at_once(cls: type) -> type:
    """Give the frozen dataclass `cls` an __init__ that sets its fields with one `__dict__.update`, in their order: the
    generated one calls object.__setattr__ once a field (~1.3 k instructions each, callgrind; a chart's derivation
    makes ~10 such objects of 2-5 fields). The same parameters, defaults and default factories, so the same objects,
    equal, hashed and frozen as before. Only for a class with none of __post_init__, InitVar, init=False, kw_only
    (refused here) and without __slots__."""
    if hasattr(cls, "__post_init__") or hasattr(cls, "__slots__") or not cls.__dataclass_params__.frozen:
        raise TypeError(f"{cls.__name__}: not a plain frozen dataclass")
    scope: dict = {"_FACTORY": _FACTORY}
    params, values = [], []
    for f in fields(cls):
        if not f.init or f.kw_only or f.name == "self":
            raise TypeError(f"{cls.__name__}.{f.name}: not a plain parameter")
        params.append(_parameter(f, scope))
        values.append(f"{f.name}={f.name}" if f.default_factory is MISSING
                      else f"{f.name}=_factory_{f.name}() if {f.name} is _FACTORY else {f.name}")
    exec(f"def __init__(self, {', '.join(params)}):\n    self.__dict__.update({', '.join(values)})\n", scope)
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init
    return cls


def _parameter(f, scope: dict) -> str:
    """The field's parameter of __init__, its default (or its factory's sentinel) put in `scope`."""
    if f.default is not MISSING:
        scope[f"_default_{f.name}"] = f.default
        return f"{f.name}=_default_{f.name}"
    if f.default_factory is not MISSING:
        scope[f"_factory_{f.name}"] = f.default_factory
        return f"{f.name}=_FACTORY"
    return f.name
