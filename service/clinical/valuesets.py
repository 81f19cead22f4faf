"""The input contract: FHIR ValueSets in cards/valuesets/, loaded once into frozensets."""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOCAL = "https://avh-cds.org/fhir/CodeSystem/avh-local"
TOPIC_SYSTEM = "https://avh-cds.org/fhir/CodeSystem/card-topic"

# A hemangioma coded with a site-unspecified ICD-10-CM code counts as vertebral when its text
# or display names the spine or a vertebra (pathway.md section 2). A region alone ("thoracic wall",
# "lumbar skin", "cervical node") or "spindle cell" does not.
SPINE_WORDS = re.compile(r"\b(vertebra\w*|spine|spinal|spinous|[CTL]\d{1,2})\b", re.IGNORECASE)
LEVEL_PATTERN = re.compile(r"\b([CTL])(\d{1,2})\b")

Code = tuple[str, str]


@dataclass(frozen=True)
class ValueSets:
    sets: Mapping[str, frozenset[Code]]
    levels: Mapping[Code, str]  # spine-structure concept -> vertebral level ("T7")
    displays: Mapping[Code, str] = field(default_factory=dict)   # what a clinician reads for a code sent bare

    def __getitem__(self, name: str) -> frozenset[Code]:
        return self.sets[name]

    def union(self, names: Iterable[str]) -> frozenset[Code]:
        return frozenset().union(*(self.sets[n] for n in names))


def load_valuesets(directory: Path) -> ValueSets:
    sets: dict[str, frozenset[Code]] = {}
    levels: dict[Code, str] = {}
    displays: dict[Code, str] = {}
    local = directory.parent / "codesystem-avh-local.json"
    if local.exists():
        system = json.loads(local.read_text())
        displays.update({(system["url"], c["code"]): c["display"] for c in system.get("concept", []) if "display" in c})
    for path in sorted(directory.glob("*.json")):
        vs = json.loads(path.read_text())
        if vs.get("resourceType") != "ValueSet" or "id" not in vs:
            raise ValueError(f"{path}: not a FHIR ValueSet with an id")
        codes = set()
        for include in vs.get("compose", {}).get("include", []):
            for concept in include.get("concept", []):
                code = (include["system"], concept["code"])
                codes.add(code)
                if "display" in concept:
                    displays.setdefault(code, concept["display"])
                for designation in concept.get("designation", []):
                    if LEVEL_PATTERN.fullmatch(designation.get("value", "")):
                        levels[code] = designation["value"]
        if not codes:
            raise ValueError(f"{path}: value set {vs['id']} has no codes")
        sets[vs["id"]] = frozenset(codes)
    return ValueSets(sets=sets, levels=levels, displays=displays)


def codings(concept) -> list[Code]:
    """(system, code) pairs of a CodeableConcept as decoded JSON (a dict) or as a model.

    facts.py calls this ~60 times a request, hence one cheap type test and one pass.
    """
    if not concept:
        return []
    if isinstance(concept, dict):
        coding = concept.get("coding")
        return [(c["system"], c["code"]) for c in (coding if isinstance(coding, list) else ())
                if isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)
                and c["system"] and c["code"]]
    return [(c.system, c.code) for c in concept.coding or () if c.system and c.code]


def in_set(concept, codes: frozenset[Code]) -> bool:
    return any(c in codes for c in codings(concept))
