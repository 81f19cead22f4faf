"""FHIR R4 search over resources held in memory: the subset avh-cds's prefetch templates use. Pure.

Parameters understood:
- `_id`: the resource's id (comma = OR);
- `patient` / `subject`: a reference, given as `123`, `Patient/123` or an absolute URL ending in
  `Patient/123` (comma = OR); `patient` only matches references to a Patient;
- `code`: a token, `system|code`, `code` (any system), `|code` (no system) or `system|` (any code
  of the system); comma = OR. The element searched is `code`, or `medicationCodeableConcept` for
  the medication resources, as in the FHIR R4 search parameter definitions;
- `_count` / `_offset`: paging (the caller builds `next` links from them);
- `_include`: `MedicationRequest:medication` / `MedicationAdministration:medication`: the Medications the
  matches reference (`Medication/id`) come along with search mode `include`;
- `_format` is accepted and ignored.
A parameter given twice must match both times (AND). Anything else (another parameter, a modifier
such as `code:text`) raises SearchError: a typo in a template shows up instead of matching everything.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple
from urllib.parse import parse_qsl

from service.clinical.record import named_resource, subject_id

DEFAULT_COUNT = 50
MAX_COUNT = 1000
CODE_ELEMENT = {
    "MedicationRequest": "medicationCodeableConcept",
    "MedicationAdministration": "medicationCodeableConcept",
    "MedicationDispense": "medicationCodeableConcept",
    "MedicationStatement": "medicationCodeableConcept",
}
CRITERIA = frozenset({"_id", "patient", "subject", "code"})
IGNORED = frozenset({"_format"})
INCLUDES = frozenset({"MedicationRequest:medication", "MedicationAdministration:medication"})


class SearchError(ValueError):
    """The search cannot be answered as asked (unknown parameter, bad value)."""


@dataclass(frozen=True)
class Search:
    resource_type: str
    criteria: tuple[tuple[str, tuple[str, ...]], ...]   # (parameter, alternatives), ANDed
    count: int = DEFAULT_COUNT
    offset: int = 0
    includes: tuple[str, ...] = ()

    def matches(self, resource: Mapping) -> bool:
        if resource.get("resourceType") != self.resource_type:
            return False
        return all(match(resource, wanted) for match, wanted in self._tests)

    @functools.cached_property
    def _tests(self) -> tuple:
        """Each criterion as (matcher, its values gathered for look-ups): a resource is looked up in them, never
        compared with each value (the values are the caller's: thousands cost each resource as much as one)."""
        return tuple((_MATCHERS[name], _GATHER[name](values)) for name, values in self.criteria)

    def select(self, resources: Iterable[Mapping]) -> list[Mapping]:
        """Every match, in the order given (page it with `page`)."""
        return [r for r in resources if self.matches(r)]

    def page(self, matched: list[Mapping]) -> list[Mapping]:
        return matched[self.offset:self.offset + self.count]

    def included(self, page: list[Mapping], resources: Iterable[Mapping]) -> list[Mapping]:
        """The Medications a page of matches references, when the search asks to include them."""
        if not self.includes:
            return []
        refs = {_reference_of(r, "medicationReference") for r in page} - {None}
        wanted = {named_resource(ref) for ref in refs if not ref.startswith("#")}     # a version names it too
        return [r for r in resources if r.get("resourceType") == "Medication" and f"Medication/{r.get('id')}" in wanted]

    def params(self, **paging: int) -> list[tuple[str, str]]:
        """The query parameters of this search (criteria, then paging), e.g. to build a next link."""
        pairs = [(name, ",".join(values)) for name, values in self.criteria]
        return pairs + [("_include", i) for i in self.includes] + [(k, str(v)) for k, v in paging.items()]


def parse_search(resource_type: str, params: Iterable[tuple[str, str]]) -> Search:
    criteria, count, offset, includes = [], DEFAULT_COUNT, 0, []
    for name, value in params:
        if name in IGNORED:
            continue
        if name == "_include":
            if value not in INCLUDES or not value.startswith(resource_type + ":"):
                raise SearchError(f"_include {value[:60]!r} is not supported (supported: {', '.join(sorted(INCLUDES))})")
            includes.append(value)
            continue
        if name == "_count":
            count = min(_non_negative(name, value), MAX_COUNT)
        elif name == "_offset":
            offset = _non_negative(name, value)
        elif name in CRITERIA:
            values = tuple(v.strip() for v in value.split(","))
            if not all(values):
                raise SearchError(f"search parameter {name!r} has an empty value")
            criteria.append((name, values))
        else:
            raise SearchError(f"search parameter {name!r} is not supported by this server "
                              f"(supported: {', '.join(sorted(CRITERIA | {'_count', '_offset'}))})")
    return Search(resource_type, tuple(criteria), count, offset, tuple(includes))


def parse_query(query: str) -> Search:
    """'Condition?patient=1&code=http://snomed.info/sct|123' -> Search (a prefetch template, filled)."""
    resource_type, _, query_string = query.partition("?")
    return parse_search(resource_type, parse_qsl(query_string, keep_blank_values=True))


def _non_negative(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SearchError(f"{name} must be a whole number, not {value[:20]!r}") from None
    if number < 0:
        raise SearchError(f"{name} must not be negative")
    return number


def _match_id(resource: Mapping, ids: frozenset[str]) -> bool:
    rid = resource.get("id")
    return isinstance(rid, str) and rid in ids


def _reference_of(resource: Mapping, element: str) -> str | None:
    ref = resource.get(element)
    return ref.get("reference") if isinstance(ref, Mapping) and isinstance(ref.get("reference"), str) else None


def _patient_ids(values: tuple[str, ...]) -> frozenset[str]:
    """The patient ids `123`, `Patient/123` or a URL ending in `Patient/123` name."""
    parts = [value.rstrip("/").split("/") for value in values]
    return frozenset(p[-1] for p in parts if len(p) < 2 or p[-2] == "Patient")


def _match_patient(resource: Mapping, ids: frozenset[str]) -> bool:
    patient = subject_id(resource)
    return isinstance(patient, str) and patient in ids


class References(NamedTuple):
    ids: frozenset[str]                     # `123`: of any type
    typed: frozenset[tuple[str, str]]       # `Group/123` or a URL ending in it


def _references(values: tuple[str, ...]) -> References:
    parts = [value.rstrip("/").split("/") for value in values]
    return References(frozenset(p[-1] for p in parts if len(p) < 2),
                      frozenset((p[-2], p[-1]) for p in parts if len(p) >= 2))


def _match_subject(resource: Mapping, wanted: References) -> bool:
    ref = _reference_of(resource, "subject")
    if ref is None:
        return False
    parts = ref.rstrip("/").split("/")
    if len(parts) < 2:
        return False
    return parts[-1] in wanted.ids or (parts[-2], parts[-1]) in wanted.typed


class Tokens(NamedTuple):
    codes: frozenset[str]                       # `code`: of any system
    systems: frozenset[str]                     # `system|`: any code of the system
    pairs: frozenset[tuple[str | None, str]]    # `system|code`, and `|code` (no system) as (None, code)


def _tokens(values: tuple[str, ...]) -> Tokens:
    codes, systems, pairs = set(), set(), set()
    for token in values:
        if "|" not in token:
            codes.add(token)
            continue
        system, _, code = token.partition("|")
        if system and not code:
            systems.add(system)
        else:
            pairs.add((system or None, code))
    return Tokens(frozenset(codes), frozenset(systems), frozenset(pairs))


def _match_code(resource: Mapping, tokens: Tokens) -> bool:
    concept = resource.get(CODE_ELEMENT.get(resource.get("resourceType"), "code"))
    codings = concept.get("coding") if isinstance(concept, Mapping) else None
    for coding in codings or []:
        if not isinstance(coding, Mapping):
            continue
        system, code = coding.get("system"), coding.get("code")
        # Only a string equals a token's code or system (and only a string or None is looked up: a list is not).
        if isinstance(code, str) and (code in tokens.codes or (system is None or isinstance(system, str))
                                      and (system, code) in tokens.pairs):
            return True
        if isinstance(system, str) and system in tokens.systems:
            return True
    return False


_MATCHERS = {"_id": _match_id, "patient": _match_patient, "subject": _match_subject, "code": _match_code}
_GATHER = {"_id": frozenset, "patient": _patient_ids, "subject": _references, "code": _tokens}


def answer_query(query: str, resources: Iterable[Mapping]) -> dict | None:
    """What a FHIR server holding `resources` answers to a filled prefetch template: the resource
    for a read ('Patient/123', None when absent), a searchset Bundle of every match for a search."""
    if "?" not in query:
        resource_type, _, rid = query.partition("/")
        return next((dict(r) for r in resources if r.get("resourceType") == resource_type and r.get("id") == rid),
                    None)
    search = parse_query(query)
    resources = list(resources)
    matched = search.select(resources)
    return {"resourceType": "Bundle", "type": "searchset", "total": len(matched),
            "entry": [{"resource": dict(r), "search": {"mode": "match"}} for r in matched]
            + [{"resource": dict(r), "search": {"mode": "include"}} for r in search.included(matched, resources)]}
