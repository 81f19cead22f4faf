"""The derivation's functions that branch `facts5` rewrote, as they were at af4f64a: the oracle of
tests/test_facts5_differential.py, which checks that reading a dexamethasone course in one pass, a concept's codings
and value sets without comprehensions, and a Condition's levels through a set derive the same ChartFacts, facts of the
moment, decisions and cards (and, each on its own, the same codings, value sets and levels). Everything else is the
service's own (service/clinical/facts.py and valuesets.py), imported below, so only what changed is kept twice, with
the functions between chart_facts and a rewritten one, so that they call these. Not imported by the service; delete
it with the differential test when the pathway next changes on purpose (do not edit it to match)."""
from __future__ import annotations

import datetime as dt

from service.clinical.elements import JsonElement
from service.clinical.facts import (  # noqa: F401 (facts_at, moment: unchanged, the test calls them here)
    ADMINISTRATION_GIVEN, ChartFacts, Coded, Dexamethasone, EARLIEST, Entries, Facts, LATEST, LEVEL_PATTERN, LEVELS,
    MEDICATION_COUNTED, MEDICATION_ONGOING, MODERATE_DAILY_DOSE_MG, OBSERVATION_CONCEPTS, OBSERVATION_EXCLUDED,
    OBSERVED_CONCEPTS, ORDER_INTENTS, PatientRecord, Readings, UNCONFIRMED_VERIFICATION, ValueSets, _medication_state,
    administration_date, ambulatory_status, birth, coded_hemangiomas, daily_dose_mg, dated_conditions, day_of,
    decompressions_in_progress, deterioration, done_in_episode, earlier_operation, episode_window, evidence,
    facts_at, in_set, in_window, instant, instant_of, is_active, is_deceased, is_recurrent, is_vertebral_hemangioma,
    joa_score, label_of, latest_of, medication_concept, minor_trauma, moment, multilevel_thoracic, names_dexamethasone,
    observation_date, oldest_first, ordered_in_episode, out_of_scope, pregnancy, procedure_date, radiotherapy_since,
    ref_of, report_date, request_date, same_lesion, sorted_levels, status_code, the_episode, the_operation,
    undated_decompression, walking_readings, workup)
from service.clinical.valuesets import _CODINGS, Code, _json_codings


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
            found = concept.__dict__[_CODINGS] = [(c["system"], c["code"]) for c in concept._json.get("coding", ())
                                                  if c.get("system") and c.get("code")]
        return found
    if isinstance(concept, dict):
        return _json_codings(concept)
    return [(c.system, c.code) for c in concept.coding or () if c.system and c.code]


def sets_holding(concept, vs: ValueSets) -> frozenset[str]:
    """The names of the value sets a coding of the concept is in: one lookup a coding (ValueSets.sets_of)."""
    sets_of = vs.sets_of
    found = [sets_of[code] for code in codings(concept) if code in sets_of]
    return found[0] if len(found) == 1 else frozenset().union(*found)


def levels_of(c, vs: ValueSets) -> set[str]:
    """Vertebral levels a Condition names: coded bodySites, then the words of its sites and code (searched at once,
    a line each: a level never runs from one line into the next)."""
    found = set()
    words = []
    for site in c.bodySite or []:
        found.update(vs.levels[code] for code in codings(site) if code in vs.levels)
        words.append(label_of(site))
    words += [c.code.text or ""] + [cd.display or "" for cd in c.code.coding or []]
    found.update([level.upper() for level in LEVEL_PATTERN.findall("\n".join(words))])
    return {lv for lv in found if lv in LEVELS}


def by_value_set(dated: list[tuple[object, object]], vs: ValueSets) -> Coded:
    """Each dated entry under every value set its code is in: the facts ask for entries by value set, some of
    them several times, and each entry's code and date are read once."""
    found: Coded = {}
    for entry in dated:
        for name in sets_holding(entry[0].code, vs):
            found.setdefault(name, []).append(entry)
    return found


def entries_of(record: PatientRecord, vs: ValueSets, born) -> Entries:
    return Entries(by_value_set([(p, procedure_date(p, born)) for p in record.of("Procedure")], vs),
                   by_value_set([(r, request_date(r)) for r in record.of("ServiceRequest")], vs),
                   by_value_set([(r, report_date(r)) for r in record.of("DiagnosticReport")], vs))


def route_words(resource) -> str:
    dosages = list(resource.dosageInstruction or ()) if hasattr(resource, "dosageInstruction") else []
    if getattr(resource, "dosage", None) is not None:
        dosages.append(resource.dosage)
    words = []
    for d in dosages:
        if d.route is not None:
            words += [d.route.text or ""] + [c.display or "" for c in d.route.coding or ()]
    return " ".join(words)


def dexamethasone_concept(resource, medications: dict[str, object], vs: ValueSets):
    """The medication's concept when it is systemic, single-ingredient dexamethasone (a coding in the set, else the
    word in the text or a display; never when the words or the dosage route name a topical form or a second
    ingredient), else None: the counted entry's label reads the same concept."""
    concept = medication_concept(resource, medications)
    if concept is None:
        return None
    names = [concept.text or ""] + [c.display or "" for c in concept.coding or ()]
    return concept if names_dexamethasone(names, route_words(resource), in_set(concept, vs["dexamethasone"])) else None


def medication_request_date(m) -> dt.datetime | None:
    """The earliest dosage start, else authoredOn."""
    starts = [instant(d.timing.repeat.boundsPeriod.start) for d in m.dosageInstruction or ()
              if d.timing and d.timing.repeat and d.timing.repeat.boundsPeriod]
    starts = [s for s in starts if s]
    return min(starts) if starts else instant(m.authoredOn)


def dexamethasone_course(record: PatientRecord, vs: ValueSets, window) -> Dexamethasone | None:
    """Ongoing or given dexamethasone in the episode, its course start and highest stated daily dose."""
    medications = {ref_of(m): m for m in record.of("Medication")}
    counted = []
    for m in record.of("MedicationRequest"):
        if m.intent not in ORDER_INTENTS or m.doNotPerform is True:
            continue
        if m.status not in MEDICATION_COUNTED:
            continue
        when = medication_request_date(m)
        if in_window(when, window) and (concept := dexamethasone_concept(m, medications, vs)) is not None:
            counted.append((when, m, m.status in MEDICATION_ONGOING, concept))
    for a in record.of("MedicationAdministration"):
        when = administration_date(a)
        if (a.status in ADMINISTRATION_GIVEN and in_window(when, window)
                and (concept := dexamethasone_concept(a, medications, vs)) is not None):
            counted.append((when, a, False, concept))
    if not counted:
        return None
    counted.sort(key=lambda item: (item[0] or LATEST, item[1].id or ""))
    doses = [daily_dose_mg(r) for _, r, _, _ in counted]
    known = [d for d in doses if d is not None]
    high = [d for d in known if d > MODERATE_DAILY_DOSE_MG]
    dose = max(high) if high else (max(known) if known and len(known) == len(doses) else None)
    dated = [when for when, _, _, _ in counted if when]
    entries = tuple(evidence(r, concept, when, vs, f"{label_of(concept, vs)} ({_medication_state(r)})")
                    for when, r, _, concept in counted)
    return Dexamethasone(entries, any(ongoing for _, _, ongoing, _ in counted), day_of(min(dated)) if dated else None,
                         dose)


def readings_by_concept(record: PatientRecord, vs: ValueSets) -> Readings:
    """Counting, dated observations by the value set of their code, oldest first (ties by id): one pass."""
    found: Readings = {name: [] for name in OBSERVATION_CONCEPTS}
    for o in record.of("Observation"):
        if o.status in OBSERVATION_EXCLUDED:
            continue
        names = OBSERVED_CONCEPTS.intersection(sets_holding(o.code, vs))
        when = observation_date(o) if names else None
        for name in names if when else ():
            found[name].append((when, o))
    for series in found.values():
        if len(series) > 1:         # most concepts have no reading or one: nothing to sort
            series.sort(key=oldest_first)
    return found


def chart_facts(record: PatientRecord, vs: ValueSets) -> ChartFacts:
    common = dict(patient_ref=f"Patient/{record.patient_id}", unavailable=record.unavailable, left_out=record.left_out)
    if is_deceased(record):
        return out_of_scope(common, "the patient is deceased", deceased=True)
    born = birth(record)
    conditions = dated_conditions(record, born)
    problems = by_value_set(conditions, vs)
    episode = the_episode(problems.get("spinal-cord-compression", ()))
    if episode is None:
        return out_of_scope(common, "no spinal cord compression on record")
    compression, (start, source) = episode
    compression_levels = levels_of(compression, vs)
    hemangiomas = [(h, when, levels_of(h, vs)) for h, when in coded_hemangiomas(conditions, problems)
                   if is_vertebral_hemangioma(h, vs)]                # with their start and levels
    if not hemangiomas:
        return out_of_scope(common, "no vertebral hemangioma on record")
    lesion_levels = [(h, when, levels) for h, when, levels in hemangiomas if same_lesion(levels, compression_levels)]
    lesion = [h for h, _, _ in lesion_levels]
    if not lesion:
        return out_of_scope(common, f"the hemangioma and the compression ({', '.join(sorted_levels(compression_levels))})"
                                    " lie more than one level apart")

    window = episode_window(start, source)
    entries = entries_of(record, vs, born)
    found = entries.procedures.get("decompression-surgery", [])
    operation = the_operation(found, window, vs)
    earlier = earlier_operation(found, window, vs)
    recurrent_status = is_recurrent(compression) or any(is_recurrent(h) for h in lesion)
    if operation is not None:
        stage, recurrence = "post-operative", False
    elif not is_active(compression):
        return out_of_scope(common, "the compression is not active and was not operated in this episode")
    else:
        recurrence = earlier is not None or recurrent_status
        if not recurrence and not any(is_active(h) for h in lesion):
            return out_of_scope(common, "the hemangioma is not active and this is not a recurrence")
        stage = "pre-operative"
    speaking, (speaking_start, _), _ = min(
        lesion_levels, key=lambda item: (not is_active(item[0]),
                                         status_code(item[0].verificationStatus) in UNCONFIRMED_VERIFICATION,
                                         -((item[1][0] or EARLIEST) - EARLIEST).total_seconds(), item[0].id or ""))
    every_level = set().union(*(levels for _, _, levels in lesion_levels)) | compression_levels
    if operation is not None:
        radiotherapy = radiotherapy_since(entries, vs, instant_of(operation), window)
    elif earlier is not None:
        radiotherapy = radiotherapy_since(entries, vs, instant_of(earlier), window)
    else:
        radiotherapy = radiotherapy_since(entries, vs, None, window, ever=True)
    competing = tuple(evidence(c, c.code, when, vs)
                      for c, (when, _) in sorted(problems.get("competing-cause", ()), key=lambda entry: entry[0].id or "")
                      if is_active(c))
    readings = readings_by_concept(record, vs)
    walking = walking_readings(readings)
    status, status_evidence = ambulatory_status(walking, vs, problems)
    hemangioma = evidence(speaking, speaking.code, speaking_start, vs)
    facts = Facts(
        in_pathway=True,
        stage=stage,
        recurrence=recurrence,
        episode_start=day_of(start),
        episode_start_from=source,
        window_start=day_of(window),
        hemangioma=hemangioma,
        hemangioma_ref=hemangioma.ref,
        hemangioma_verification=status_code(speaking.verificationStatus) or "confirmed",
        compression=evidence(compression, compression.code, start, vs),
        compression_verification=status_code(compression.verificationStatus) or "confirmed",
        competing=competing,
        levels=sorted_levels(every_level),
        multilevel_thoracic=multilevel_thoracic(set().union(*(levels for _, _, levels in hemangiomas))),
        surgery=operation,
        earlier_operation=earlier,
        undated_decompression=undated_decompression(found, vs),
        decompression_ordered=latest_of(ordered_in_episode(entries, vs, "decompression-surgery", window)),
        posterior_fixation=latest_of(done_in_episode(entries, vs, "posterior-stabilization", window)
                                     + ordered_in_episode(entries, vs, "posterior-stabilization", window)),
        embolization=latest_of(done_in_episode(entries, vs, "embolization", window)
                               + ordered_in_episode(entries, vs, "embolization", window)),
        radiotherapy=radiotherapy,
        mri_entire_spine=workup(entries, vs, "mri-entire-spine", window),
        mri_thoracic=workup(entries, vs, "mri-thoracic-spine", window),
        spine_cta=workup(entries, vs, "spine-ct-angiography", window),
        ambulatory_status=status,
        ambulatory_evidence=status_evidence,
        dexamethasone=dexamethasone_course(record, vs, window),
        injury=minor_trauma(problems, vs, start),
        joa=joa_score(readings, vs),
        **common,
    )
    return ChartFacts(facts, born, deterioration(readings, walking, vs, problems, window),
                      pregnancy(readings, vs, problems), decompressions_in_progress(found, vs))
