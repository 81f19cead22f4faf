"""FHIR R4B's type names, as a path or a log line may name them."""
from __future__ import annotations

from fhir.resources.R4B import get_fhir_model_class


def known_type(name: str) -> bool:
    """Whether `name` is a FHIR resource or data type (a name the caller chose is logged only when it is one)."""
    try:
        get_fhir_model_class(name)
    except ValueError:
        return False
    return name[:1].isupper()
