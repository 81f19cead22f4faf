"""The input contract of pathway.md section 2 as it stands in cards/valuesets/ (docs/codes.md)."""
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from service.clinical.valuesets import (CPT, ICD10CM, LEVEL_PATTERN, LEVELS, LOCAL, LOINC, RXNORM, SNOMED, SPINE_WORDS,
                                        level_rank, load_valuesets)

CARDS = Path(__file__).resolve().parent.parent / "cards"
VS = load_valuesets(CARDS / "valuesets")
RAW = {p.stem: json.loads(p.read_text()) for p in sorted((CARDS / "valuesets").glob("*.json"))}


def codes(name: str, system: str) -> set[str]:
    return {code for s, code in VS[name] if s == system}


def displays(name: str) -> dict[tuple[str, str], str]:
    return {(inc["system"], c["code"]): c["display"] for inc in RAW[name]["compose"]["include"] for c in inc["concept"]}


# --- the files themselves ---------------------------------------------------------------------------

def test_every_set_is_named_by_its_file_and_has_a_display_for_every_code():
    for stem, vs in RAW.items():
        assert vs["id"] == stem and vs["url"] == f"https://avh-cds.org/fhir/ValueSet/{stem}"
        assert all(d.strip() for d in displays(stem).values()), stem


def test_the_ids_the_service_loads_are_all_there():
    assert set(VS.sets) == {
        "ambulatory-status", "competing-cause", "decompression-surgery", "dexamethasone", "embolization",
        "hemangioma-site-unspecified", "injury", "joa-score", "lower-extremity-motor-score", "mri-entire-spine",
        "mri-thoracic-spine", "neurologic-deficit", "non-ambulatory-deficit", "posterior-stabilization", "pregnancy",
        "pregnancy-status", "pregnancy-status-pregnant", "radiotherapy", "rapid-deterioration",
        "spinal-cord-compression", "spine-ct-angiography", "spine-structure", "vertebral-hemangioma",
        "vertebroplasty"}


def write_set(directory: Path, name: str, concept: dict, vs_id: str | None = None) -> None:
    vs = {"resourceType": "ValueSet", "id": vs_id or name,
          "compose": {"include": [{"system": SNOMED, "concept": [concept]}]}}
    (directory / f"{name}.json").write_text(json.dumps(vs))


@pytest.mark.parametrize("concept", [{"code": "1912002"}, {"code": "1912002", "display": " "},
                                     {"code": "", "display": "Fall"}])
def test_a_concept_without_code_or_display_stops_the_start(tmp_path, concept):
    write_set(tmp_path, "injury", concept)
    with pytest.raises(ValueError, match="needs a code and a display"):
        load_valuesets(tmp_path)


def test_an_id_defined_twice_or_a_set_without_codes_stops_the_start(tmp_path):
    write_set(tmp_path, "a", {"code": "1912002", "display": "Fall"}, vs_id="injury")
    write_set(tmp_path, "b", {"code": "1912002", "display": "Fall"}, vs_id="injury")
    with pytest.raises(ValueError, match="defined twice"):
        load_valuesets(tmp_path)
    (tmp_path / "b.json").write_text(json.dumps({"resourceType": "ValueSet", "id": "empty", "compose": {}}))
    with pytest.raises(ValueError, match="has no codes"):
        load_valuesets(tmp_path)


# --- spine structures and levels -------------------------------------------------------------------

def test_every_vertebra_from_c1_to_l5_and_the_sacrum_is_a_spine_structure_with_its_level():
    levels = sorted(VS.levels.values(), key=level_rank)
    expected = ([f"C{n}" for n in range(1, 8)] + [f"T{n}" for n in range(1, 13)] + [f"L{n}" for n in range(1, 6)]
                + ["S1"])
    assert levels == expected
    assert set(VS.levels) <= VS["spine-structure"]
    assert VS.levels[(SNOMED, "62487009")] == "T7" and VS.levels[(SNOMED, "14806007")] == "C1"
    assert VS.levels[(SNOMED, "49668003")] == "L5" and VS.levels[(SNOMED, "54735007")] == "S1"
    regions = {"421060004", "122494005", "122495006", "122496007"}
    assert regions <= codes("spine-structure", SNOMED) and not {(SNOMED, c) for c in regions} & set(VS.levels)


def test_adjacent_levels_are_one_apart_across_every_junction():
    for upper, lower in (("C7", "T1"), ("T12", "L1"), ("L5", "S1"), ("T6", "T7")):
        assert level_rank(lower) - level_rank(upper) == 1


def test_level_pattern_knows_only_real_levels():
    found = [m.group(0) for m in LEVEL_PATTERN.finditer("T10-T12, C8, L5/S1, C7, T13, L6, S6")]
    assert found == ["T10", "T12", "L5", "S1", "C7"]


# The plain form of LEVEL_PATTERN: every level, longest first, as a word.
PLAIN_LEVELS = re.compile(r"\b(" + "|".join(sorted(LEVELS, key=len, reverse=True)) + r")\b")
# Texts made of what decides a match: region letters (of either case), digits (ASCII and not), other word characters,
# separators, and whole levels.
LEVEL_TEXT = st.lists(st.sampled_from(["C", "T", "L", "S", "c", "t", "0", "1", "2", "3", "5", "7", "9", "٣", "_", "a",
                                       "é", " ", "-", "/", "\n", ",", "T1", "T12", "C7", "L5", "S1", "T13"]),
                      max_size=30).map("".join)


@settings(max_examples=3000, deadline=None)
@given(LEVEL_TEXT)
def test_level_pattern_finds_what_the_plain_alternation_finds(text):
    assert LEVEL_PATTERN.findall(text) == PLAIN_LEVELS.findall(text)


@pytest.mark.parametrize("text, spinal", [("Hemangioma of T9 vertebra", True), ("hemangioma of the sacrum", True),
                                          ("sacral hemangioma", False), ("hemangioma S1 dermatome", False),
                                          ("thoracic wall hemangioma", False)])
def test_words_that_make_a_site_unspecified_hemangioma_vertebral(text, spinal):
    assert bool(SPINE_WORDS.search(text)) is spinal


def test_the_hemangioma_and_compression_codes():
    assert VS["vertebral-hemangioma"] == {(SNOMED, "448232005")}
    assert VS["hemangioma-site-unspecified"] == {(ICD10CM, "D18.09"), (ICD10CM, "D18.00")}
    assert VS["spinal-cord-compression"] == {(ICD10CM, "G95.20"), (ICD10CM, "G95.29"), (SNOMED, "71286001")}


# --- competing cause, paraplegia -------------------------------------------------------------------

def test_competing_causes_are_malignancy_myeloma_and_disc_myelopathy_only():
    icd = codes("competing-cause", ICD10CM)
    assert {"C79.51", "C41.2", "C90.00", "C90.01", "C90.02", "M50.00", "M50.01", "M50.020", "M50.021", "M50.022",
            "M50.023", "M50.03", "M51.04", "M51.05", "M51.06"} <= icd
    assert all(re.fullmatch(r"C79\.51|C41\.2|C90\.0\d|M50\.0\d*|M51\.0\d", c) for c in icd)
    assert {"94222008", "94602001", "109989006"} <= codes("competing-cause", SNOMED)
    in_scope = VS.union(["vertebral-hemangioma", "hemangioma-site-unspecified", "spinal-cord-compression"])
    assert not VS["competing-cause"] & in_scope


def test_complete_paraplegia_alone_means_non_ambulatory():
    assert VS["non-ambulatory-deficit"] == {(ICD10CM, "G82.21")}
    for not_complete in ((ICD10CM, "G82.20"), (ICD10CM, "G82.22"), (SNOMED, "60389000")):
        assert not_complete not in VS["non-ambulatory-deficit"] and not_complete in VS["neurologic-deficit"]
    # the record keeps Conditions by the neurologic-deficit set, so complete paraplegia must stay inside it
    assert VS["non-ambulatory-deficit"] <= VS["neurologic-deficit"]
    assert {"312444006", "102568007"} <= codes("neurologic-deficit", SNOMED)


# --- pregnancy -------------------------------------------------------------------------------------

def test_pregnancy_is_widened_to_real_codes_and_bounded():
    icd = codes("pregnancy", ICD10CM)
    z34 = {f"Z34.{a}{b}" for a in "089" for b in "0123"}
    assert z34 | {"Z33.1", "O99.351", "O99.352", "O99.353", "O09.00", "O09.A3", "O09.529", "O09.93"} <= icd
    assert all(re.fullmatch(r"Z33\.1|Z34\.[089][0-3]|O09\.[0-9A]\d{1,2}|O99\.35[1-3]", c) for c in icd)
    assert not {"O09", "O09.5", "Z34", "O99.350", "Z33.2", "Z39.2"} & icd     # no headers, no after-pregnancy codes
    assert codes("pregnancy", SNOMED) == {"77386006", "72892002"}


def test_pregnancy_status_observation_and_its_pregnant_answers_are_separate_sets():
    assert VS["pregnancy-status"] == {(LOINC, "82810-3")}
    assert VS["pregnancy-status-pregnant"] == {(LOINC, "LA15173-0"), (SNOMED, "77386006")}
    assert (LOINC, "82810-3") not in VS["pregnancy"]


# --- procedures ------------------------------------------------------------------------------------

def test_decompression_is_laminectomy_or_corpectomy_with_decompression_not_partial_excision():
    cpt = codes("decompression-surgery", CPT)
    assert {"63003", "63046", "63276", "63302", "63001", "63005", "63085", "63300", "63308"} <= cpt
    assert all(63001 <= int(c) <= 63017 or 63085 <= int(c) <= 63088 or 63300 <= int(c) <= 63308
               or c in {"63046", "63276"} for c in cpt)
    assert not {"22101", "22112", "22116"} & cpt
    assert {"387731002", "10836008"} <= codes("decompression-surgery", SNOMED)
    assert "708651002" not in codes("decompression-surgery", SNOMED)


def test_fusion_alone_is_not_posterior_instrumentation():
    assert VS["posterior-stabilization"] == {(CPT, c) for c in ("22840", "22842", "22843", "22844")}
    assert (CPT, "22610") not in VS["posterior-stabilization"]
    assert not {(SNOMED, "55705006"), (SNOMED, "448944002")} & VS["posterior-stabilization"]


def test_vertebroplasty_embolization_and_radiotherapy_codes():
    assert VS["vertebroplasty"] == {(CPT, c) for c in ("22510", "22511", "22512")}
    assert VS["embolization"] == {(CPT, c) for c in ("61624", "37243", "75894")}
    assert VS["radiotherapy"] == {(SNOMED, "33195004")} | {(CPT, c) for c in ("77427", "77412", "77385", "77386")}


def test_thoracic_mri_never_counts_as_mri_of_the_entire_spine():
    assert {"36067-7", "36400-0"} <= codes("mri-entire-spine", LOINC)
    assert VS["mri-thoracic-spine"] == {(CPT, c) for c in ("72146", "72147", "72157")}
    assert not VS["mri-thoracic-spine"] & VS["mri-entire-spine"]
    assert all(d.startswith(("MR Spine", "MR Cervical and thoracic and lumbar spine"))
               for d in displays("mri-entire-spine").values())


def test_vessels_mapped_by_ct_angiography_or_catheter_spinal_angiography():
    assert VS["spine-ct-angiography"] == {(LOCAL, "ct-angiography-spine"), (LOINC, "24925-0")}
    assert displays("spine-ct-angiography")[(LOINC, "24925-0")].startswith("RFA Spinal artery")


# --- dexamethasone, injury -------------------------------------------------------------------------

def test_dexamethasone_is_systemic_and_single_ingredient():
    assert {"3264", "48933", "1116927", "1812194", "1116928", "197582"} <= codes("dexamethasone", RXNORM)
    local_forms = re.compile(r"ophthalmic|otic|topical|nasal|inhal|implant| / ", re.IGNORECASE)  # " / " joins ingredients
    assert not [d for d in displays("dexamethasone").values() if local_forms.search(d)]
    assert all("examethasone" in d for d in displays("dexamethasone").values())


def test_injury_is_falls_and_back_injuries_at_the_initial_encounter():
    icd = codes("injury", ICD10CM)
    assert {"W19.XXXA", "W01.0XXA", "S39.012A", "S33.5XXA", "S23.3XXA"} <= icd
    assert all(re.fullmatch(r"[WS]\d\d\.[0-9X]{3}A", c) for c in icd)
    assert {"1912002", "217082002", "712893003"} <= codes("injury", SNOMED)
    assert not [d for d in displays("injury").values() if re.search(r"fracture|history|height", d, re.IGNORECASE)]


# --- the local code system -------------------------------------------------------------------------

def test_local_codes_used_by_the_sets_are_defined_in_the_local_code_system():
    system = json.loads((CARDS / "codesystem-avh-local.json").read_text())
    assert system["url"] == LOCAL
    defined = {c["code"] for c in system["concept"]}
    used = {code for codes_ in VS.sets.values() for s, code in codes_ if s == LOCAL}
    assert used <= defined
    assert {"ambulatory-status", "lower-extremity-motor-score", "rapidly-progressive-neurologic-deficit",
            "joa-score", "ct-angiography-spine", "ambulatory", "ambulatory-with-assistance",
            "non-ambulatory"} <= defined
