"""FHIR R4 search over in-memory resources: the query subset CDS Hooks prefetch templates use.

`Patient/123` is an instance read; `Condition?patient=123&code=sys|a,sys|b` is a type search where
each parameter must match (AND) and a comma inside one value means OR. Supported parameters:
`_id`, `patient`, `subject` (references) and `code`, `status`, `clinical-status`, `category`
(tokens: `system|code`, `|code`, `code`, `system|`). Result parameters (`_count`, `_sort`, ...)
are not filters: they are handed back to the caller (the fixture FHIR endpoint pages with them).
Anything else raises UnsupportedSearch, so a caller can answer 400 instead of silently ignoring a
filter and returning too much.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl, unquote

RESULT_PARAMETERS = frozenset({"_count", "_sort", "_summary", "_total", "_elements", "_format"})
MEDICATION_TYPES = frozenset({"MedicationRequest", "MedicationStatement", "MedicationAdministration",
                              "MedicationDispense"})


class UnsupportedSearch(ValueError):
    """A query outside the supported subset (unknown parameter, modifier or malformed query)."""


@dataclass(frozen=True)
class Query:
    resource_type: str
    id: str | None = None                                   # set for an instance read
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()   # (parameter, OR-values), ANDed
    result: Mapping[str, str] = field(default_factory=dict)

    def matches(self, resource: Mapping[str, Any]) -> bool:
        if resource.get("resourceType") != self.resource_type:
            return False
        if self.id is not None:
            return resource.get("id") == self.id
        return all(any(_match(resource, name, value) for value in values) for name, values in self.filters)


def parse_query(query: str) -> Query:
    """'Condition?patient=1&code=a|b' or 'Patient/1' (relative to the FHIR base) -> Query."""
    path, _, params = query.lstrip("/").partition("?")
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts or not parts[0][:1].isupper() or len(parts) > 2 or (len(parts) == 2 and params):
        raise UnsupportedSearch(f"not a FHIR read or type search: {query!r}")
    if len(parts) == 2:
        return Query(parts[0], id=parts[1])
    filters, result = [], {}
    for name, value in parse_qsl(params, keep_blank_values=True):
        if name in RESULT_PARAMETERS:
            result[name] = value
            continue
        if name not in MATCHERS:
            raise UnsupportedSearch(f"search parameter {name!r} is not supported")
        values = tuple(v for v in value.split(",") if v)
        if not values:
            raise UnsupportedSearch(f"search parameter {name!r} has no value")
        filters.append((name, values))
    return Query(parts[0], filters=tuple(filters), result=result)


def search(resources: Iterable[Mapping[str, Any]], query: str | Query) -> list[Mapping[str, Any]]:
    """The resources a read or search returns, in their given order."""
    parsed = parse_query(query) if isinstance(query, str) else query
    return [r for r in resources if isinstance(r, Mapping) and parsed.matches(r)]


# --- parameter semantics ----------------------------------------------------------------------

def _reference_matches(ref: Any, value: str, target_type: str | None) -> bool:
    if not isinstance(ref, Mapping) or not isinstance(ref.get("reference"), str):
        return False
    ref_type, _, ref_id = ref["reference"].rstrip("/").rpartition("/")
    ref_type = ref_type.rpartition("/")[2]
    want_type, _, want_id = value.rstrip("/").rpartition("/")
    want_type = want_type.rpartition("/")[2]
    if target_type and ref_type != target_type:
        return False
    return ref_id == want_id and (not want_type or want_type == ref_type)


def _token_matches(concepts: Any, value: str) -> bool:
    """A token against one CodeableConcept or a list of them."""
    if isinstance(concepts, Mapping):
        concepts = [concepts]
    if not isinstance(concepts, list):
        return False
    system, bar, code = value.partition("|")
    if not bar:
        system, code = None, value
    for concept in concepts:
        for coding in (concept.get("coding") or []) if isinstance(concept, Mapping) else []:
            if not isinstance(coding, Mapping):
                continue
            if system is not None and (coding.get("system") or "") != system:
                continue
            if code and coding.get("code") != code:
                continue
            return True
    return False


def _code_token_matches(code: Any, value: str) -> bool:
    """A token against a plain code element (status, id): any system part is ignored."""
    return isinstance(code, str) and code == value.rpartition("|")[2]


def _patient(resource: Mapping, value: str) -> bool:
    return any(_reference_matches(resource.get(path), value, "Patient") for path in ("subject", "patient"))


def _code(resource: Mapping, value: str) -> bool:
    path = "medicationCodeableConcept" if resource.get("resourceType") in MEDICATION_TYPES else "code"
    return _token_matches(resource.get(path), value)


MATCHERS = {
    "_id": lambda r, v: _code_token_matches(r.get("id"), v),
    "patient": _patient,
    "subject": lambda r, v: _reference_matches(r.get("subject"), v, None),
    "code": _code,
    "status": lambda r, v: _code_token_matches(r.get("status"), v),
    "clinical-status": lambda r, v: _token_matches(r.get("clinicalStatus"), v),
    "category": lambda r, v: _token_matches(r.get("category"), v),
}


def _match(resource: Mapping, name: str, value: str) -> bool:
    return MATCHERS[name](resource, value)
