"""The input contract: FHIR ValueSets in cards/valuesets/, loaded once into frozensets."""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.clinical.elements import JsonElement

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOCAL = "https://avh-cds.org/fhir/CodeSystem/avh-local"
TOPIC_SYSTEM = "https://avh-cds.org/fhir/CodeSystem/card-topic"

# Vertebral levels from the skull down: C1-C7, T1-T12, L1-L5 and the sacral segments S1-S5 (the sacrum
# as a whole is S1 in spine-structure). Their order is how far apart two levels are.
LEVELS = (tuple(f"C{n}" for n in range(1, 8)) + tuple(f"T{n}" for n in range(1, 13))
          + tuple(f"L{n}" for n in range(1, 6)) + tuple(f"S{n}" for n in range(1, 6)))
_LEVEL_RANK = {level: rank for rank, level in enumerate(LEVELS)}
# A level standing as a word. Its region's letter comes first, so that re skips from one C, T, L or S to the next
# instead of trying every position of the text; then no word character before the letter, a number of that region
# (longest first), none after it: what \b(T12|...|C1)\b finds, at a third of its cost (levels_of reads every
# hemangioma's and compression's words).
_NUMBERS = {region: [lv[1:] for lv in LEVELS if lv[0] == region] for region in dict.fromkeys(lv[0] for lv in LEVELS)}
_REGIONS = "".join(_NUMBERS)
LEVEL_PATTERN = re.compile(rf"[{_REGIONS}](?<!\w[{_REGIONS}])(?:" + "|".join(
    rf"(?<={region})(?:{'|'.join(sorted(numbers, key=len, reverse=True))})" for region, numbers in _NUMBERS.items())
    + r")(?!\w)")

# A span of levels written as one: "T5-T10", "T6–T8", "T6 to T8", "T11-L1", "T6-8" (the second number of the first
# one's region, after a dash, and greater: "T12-1" or "T6 to 8 weeks" is no span). Every level between its ends is
# named: hemangiomas "T5-T10" lie at T7 too.
_SPAN_DASH = "[-\u2010-\u2015\u2212]"
LEVEL_SPAN = re.compile(rf"(?<!\w)([{_REGIONS}])(\d{{1,2}}) ?({_SPAN_DASH}|to |through |thru ) ?([{_REGIONS}]?)(\d{{1,2}})(?!\w)")


def named_levels(text: str) -> set[str]:
    """The vertebral levels a text names: each level word, and every level a span of them covers."""
    found = set(LEVEL_PATTERN.findall(text))
    if found and len(found) < len(LEVELS):
        for region, first, joined_by, last_region, last in LEVEL_SPAN.findall(text):
            if not last_region and (joined_by[0].isalpha() or int(last) <= int(first)):
                continue                # the short form: a dash, and a greater number (review13)
            ends = (f"{region}{int(first)}", f"{last_region or region}{int(last)}")
            if ends[0] in _LEVEL_RANK and ends[1] in _LEVEL_RANK:
                low, high = sorted(_LEVEL_RANK[end] for end in ends)
                found.update(LEVELS[low:high + 1])
    return found

# A hemangioma coded with a site-unspecified ICD-10-CM code counts as vertebral when its text
# or display names the spine or a vertebra (pathway.md section 2). A region alone ("thoracic wall",
# "lumbar skin", "cervical node", "sacral" - often a skin hemangioma) or "spindle cell" does not,
# nor does a sacral level alone; "sacrum" does.
_VERTEBRA_LEVELS = "|".join(sorted((lv for lv in LEVELS if not lv.startswith("S")), key=len, reverse=True))
SPINE_WORDS = re.compile(rf"\b(vertebra\w*|spine|spinal|spinous|sacrum|{_VERTEBRA_LEVELS})\b", re.IGNORECASE)

Code = tuple[str, str]


@dataclass(frozen=True)
class ValueSets:
    sets: Mapping[str, frozenset[Code]]
    levels: Mapping[Code, str]  # spine-structure concept -> vertebral level ("T7")
    displays: Mapping[Code, str] = field(default_factory=dict)   # what a clinician reads for a code sent bare
    # code -> the names of the value sets that hold it, worked out once at start-up (the facts ask it of every entry)
    sets_of: Mapping[Code, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        holding: dict[Code, set[str]] = {}
        for name, codes in self.sets.items():
            for code in codes:
                holding.setdefault(code, set()).add(name)
        object.__setattr__(self, "sets_of", {code: frozenset(names) for code, names in holding.items()})

    def __getitem__(self, name: str) -> frozenset[Code]:
        return self.sets[name]

    def union(self, names: Iterable[str]) -> frozenset[Code]:
        return frozenset().union(*(self.sets[n] for n in names))


def level_rank(level: str) -> int:
    """Position of a vertebral level from the skull down, so that adjacent levels differ by one."""
    return _LEVEL_RANK[level]


def load_valuesets(directory: Path) -> ValueSets:
    """Every ValueSet in the directory; raises ValueError on a malformed one so the service refuses to start."""
    sets: dict[str, frozenset[Code]] = {}
    levels: dict[Code, str] = {}
    displays: dict[Code, str] = {}
    local = directory.parent / "codesystem-avh-local.json"
    if local.exists():
        system = json.loads(local.read_text())
        displays.update({(system["url"], c["code"]): c["display"] for c in system.get("concept", []) if "display" in c})
    for path in sorted(directory.glob("*.json")):
        vs = json.loads(path.read_text())
        if vs.get("resourceType") != "ValueSet" or not isinstance(vs.get("id"), str) or not vs["id"]:
            raise ValueError(f"{path}: not a FHIR ValueSet with an id")
        if vs["id"] in sets:
            raise ValueError(f"{path}: value set id {vs['id']} is defined twice")
        codes = set()
        for include in vs.get("compose", {}).get("include", []):
            system = include.get("system")
            if not isinstance(system, str) or not system:
                raise ValueError(f"{path}: an include has no system")
            for concept in include.get("concept", []):
                code = (system, concept.get("code"))
                if not _filled(concept.get("code")) or not _filled(concept.get("display")):
                    raise ValueError(f"{path}: a concept of {system} needs a code and a display")
                codes.add(code)
                if "display" in concept:
                    displays.setdefault(code, concept["display"])
                for designation in concept.get("designation", []):
                    if designation.get("value") in _LEVEL_RANK:
                        levels[code] = designation["value"]
        if not codes:
            raise ValueError(f"{path}: value set {vs['id']} has no codes")
        sets[vs["id"]] = frozenset(codes)
    return ValueSets(sets=sets, levels=levels, displays=displays)


def _filled(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def codings(concept) -> list[Code]:
    """(system, code) pairs of a CodeableConcept as decoded JSON (a dict), a JsonElement or a model; read, never
    changed, by the caller.

    facts.py calls this ~60 times a request, on a few concepts: a JsonElement's are worked out once and kept on it.
    """
    if not concept:
        return []
    if type(concept) is JsonElement:
        found = concept.__dict__.get(_CODINGS)      # a key no FHIR element name can be
        if found is None:       # the schema accepted it: `coding` a list of objects, their system and code strings
            found = []          # a loop, not a comprehension (a function object made a call): ~17 concepts a chart
            for c in concept._json.get("coding", ()):
                system, code = c.get("system"), c.get("code")
                if system and code:
                    found.append((system, code))
            concept.__dict__[_CODINGS] = found
        return found
    if isinstance(concept, dict):
        return _json_codings(concept)
    return [(c.system, c.code) for c in concept.coding or () if c.system and c.code]


_CODINGS = "(codings)"


def _json_codings(concept: dict) -> list[Code]:
    coding = concept.get("coding")
    found = []
    for c in coding if isinstance(coding, list) else ():
        if isinstance(c, dict):
            system, code = c.get("system"), c.get("code")
            if isinstance(system, str) and isinstance(code, str) and system and code:
                found.append((system, code))
    return found


def in_set(concept, codes: frozenset[Code]) -> bool:
    return not codes.isdisjoint(codings(concept))


def sets_holding(concept, vs: ValueSets) -> frozenset[str]:
    """The names of the value sets a coding of the concept is in: one lookup a coding (ValueSets.sets_of). Most
    concepts have one coding: its sets are looked up without a comprehension."""
    sets_of = vs.sets_of
    codes = codings(concept)
    if len(codes) == 1:
        return sets_of.get(codes[0], NO_SETS)
    found = [sets_of[code] for code in codes if code in sets_of]
    return found[0] if len(found) == 1 else frozenset().union(*found)


NO_SETS: frozenset[str] = frozenset()
