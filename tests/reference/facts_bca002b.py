"""The derivation's functions that branch `derive` rewrote, as they were at bca002b: the oracle of
tests/test_derive_differential.py, which checks that reading each entry once (a medication's concept, the walking
values, the hemangioma candidates, the observations' concepts) derives the same ChartFacts, facts of the moment and
decisions; and pathway.patient_flags as it was. Everything else is the service's own (service/clinical/facts.py),
imported below, so only what changed is kept twice. Not imported by the service; delete it with the differential
test when the pathway next changes on purpose (do not edit it to match)."""
from __future__ import annotations

from service.clinical.facts import (  # noqa: F401 (facts_at, moment: unchanged, the test calls them here)
    ABATEMENT_FORMS, ADMINISTRATION_GIVEN, ChartFacts, Coded, Deterioration, Dexamethasone, EARLIEST, Evidence,
    Facts, LATEST, MEDICATION_COUNTED, MEDICATION_ONGOING, MODERATE_DAILY_DOSE_MG, MOTOR_DROP, OBSERVATION_CONCEPTS,
    OBSERVATION_EXCLUDED, ORDER_INTENTS, RADIOTHERAPY_LATE_DAYS, PatientRecord, Readings, UNCONFIRMED_VERIFICATION,
    ValueSets, WALKING_WORDS, _medication_state, administration_date, birth, by_value_set, daily_dose_mg,
    dated_conditions, day_of, decompressions_in_progress, done_in_episode, earlier_operation, entries_of,
    episode_window, evidence, in_set, in_window, instant, instant_of, is_active, is_deceased, is_recurrent,
    is_vertebral_hemangioma, joa_score, label_of, latest_of, levels_of, medication_concept, medication_request_date,
    minor_trauma, motor_score, multilevel_thoracic, names_dexamethasone, observation_date, ordered_in_episode,
    out_of_scope, pregnancy, radiotherapy_since, reading, ref_of, route_words, said_once, same_lesion, sets_holding,
    sorted_levels, status_code, the_episode, the_operation, undated_decompression, walking_value, workup,
    worsenings, facts_at, moment)


def is_dexamethasone(resource, medications: dict[str, object], vs: ValueSets) -> bool:
    """Systemic, single-ingredient dexamethasone: a coding in the set, else the word in the text or a display;
    never when the words or the dosage route name a topical form or a second ingredient."""
    concept = medication_concept(resource, medications)
    if concept is None:
        return False
    names = [concept.text or ""] + [c.display or "" for c in concept.coding or ()]
    return names_dexamethasone(names, route_words(resource), in_set(concept, vs["dexamethasone"]))


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
        if in_window(when, window) and is_dexamethasone(m, medications, vs):
            counted.append((when, m, m.status in MEDICATION_ONGOING))
    for a in record.of("MedicationAdministration"):
        when = administration_date(a)
        if a.status in ADMINISTRATION_GIVEN and in_window(when, window) and is_dexamethasone(a, medications, vs):
            counted.append((when, a, False))
    if not counted:
        return None
    counted.sort(key=lambda item: (item[0] or LATEST, item[1].id or ""))
    doses = [daily_dose_mg(r) for _, r, _ in counted]
    known = [d for d in doses if d is not None]
    high = [d for d in known if d > MODERATE_DAILY_DOSE_MG]
    dose = max(high) if high else (max(known) if known and len(known) == len(doses) else None)
    dated = [when for when, _, _ in counted if when]
    entries = tuple(evidence(r, concept, when, vs, f"{label_of(concept, vs)} ({_medication_state(r)})")
                    for when, r, _ in counted for concept in [medication_concept(r, medications)])
    return Dexamethasone(entries, any(ongoing for _, _, ongoing in counted), day_of(min(dated)) if dated else None, dose)


def readings_by_concept(record: PatientRecord, vs: ValueSets) -> Readings:
    """Counting, dated observations by the value set of their code, oldest first (ties by id): one pass."""
    found: Readings = {name: [] for name in OBSERVATION_CONCEPTS}
    for o in record.of("Observation"):
        if o.status in OBSERVATION_EXCLUDED:
            continue
        names = [name for name in sets_holding(o.code, vs) if name in found]
        when = observation_date(o) if names else None
        for name in names if when else ():
            found[name].append((when, o))
    for series in found.values():
        series.sort(key=lambda item: (item[0], item[1].id or ""))
    return found


def deterioration(readings: Readings, vs: ValueSets, problems: Coded, window) -> Deterioration:
    stated, in_episode = [], []
    for c, (start, _) in problems.get("rapid-deterioration", ()):
        dates = [d for d in (start, instant(c.recordedDate)) if d]
        if not dates:
            continue
        when = max(dates)
        able = is_active(c) and not any(getattr(c, f"abatement{kind}") is not None for kind in ABATEMENT_FORMS)
        ev = evidence(c, c.code, when, vs)
        stated.append((when, able, ev))
        if in_window(when, window):
            in_episode.append((when, (ev,)))
    flags = [(when, o) for when, o in readings["rapid-deterioration"]
             if o.valueBoolean is not None]
    for when, o in flags:
        if o.valueBoolean and in_window(when, window):
            in_episode.append((when, (reading(o, "yes", when, vs),)))
    flag = None
    if flags and flags[-1][1].valueBoolean:
        when, o = flags[-1]
        flag = (when, reading(o, "yes", when, vs))

    # Each reading as (observation, words, time): made Evidence only when a worsening names it (said_once).
    walking_series = [(when, (o, WALKING_WORDS[v], when), 0.0 if v == "non-ambulatory" else 1.0)
                      for when, o in readings["ambulatory-status"]
                      for v in [walking_value(o)] if v]
    motor_series = [(when, (o, f"{m:g} of 50", when), m)
                    for when, o in readings["lower-extremity-motor-score"]
                    for m in [motor_score(o)] if m is not None]
    said = said_once(vs)
    latest_pairs = []
    for series, worse in ((walking_series, lambda best, later: best > 0 and later == 0),
                          (motor_series, lambda best, later: best - later >= MOTOR_DROP)):
        pairs = worsenings(series, worse)
        in_episode += [(when, said(pair)) for when, pair in pairs if in_window(when, window)]
        if pairs and series and pairs[-1][0] == series[-1][0] and pairs[-1][1][1] is series[-1][1]:
            latest_pairs.append((pairs[-1][0], said(pairs[-1][1])))
    first = min(in_episode, key=lambda item: (item[0], item[1][0].ref)) if in_episode else None
    return Deterioration(tuple(stated), flag, tuple(latest_pairs), first)


def ambulatory_status(readings: Readings, vs: ValueSets, problems: Coded) -> tuple[str | None, Evidence | None]:
    """The latest ambulatory-status observation; without one, a complete paraplegia means non-ambulatory."""
    walking = [(when, o) for when, o in readings["ambulatory-status"] if walking_value(o)]
    if walking:
        when, o = walking[-1]
        value = walking_value(o)
        return value, reading(o, WALKING_WORDS[value], when, vs)
    paraplegia = sorted(((c, start) for c, (start, _) in problems.get("non-ambulatory-deficit", ()) if is_active(c)),
                        key=lambda entry: entry[0].id or "")
    if paraplegia:
        c, start = paraplegia[0]
        return "non-ambulatory", evidence(c, c.code, start, vs)
    return None, None


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
    hemangiomas = [(h, when, levels_of(h, vs)) for h, when in conditions
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
    status, status_evidence = ambulatory_status(readings, vs, problems)
    facts = Facts(
        in_pathway=True,
        stage=stage,
        recurrence=recurrence,
        episode_start=day_of(start),
        episode_start_from=source,
        window_start=day_of(window),
        hemangioma=evidence(speaking, speaking.code, speaking_start, vs),
        hemangioma_ref=ref_of(speaking),
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
    return ChartFacts(facts, born, deterioration(readings, vs, problems, window),
                      pregnancy(readings, vs, problems), decompressions_in_progress(found, vs))


def patient_flags(facts: Facts) -> frozenset[str]:
    """The words a card file may test (cards/schema.json `when`/`unless`)."""
    flags = {"rapid" if facts.rapid_deterioration else ("lapsed" if facts.deterioration_lapsed else "stable")}
    status = facts.ambulatory_status
    flags.add({"ambulatory": "ambulatory", "ambulatory-with-assistance": "ambulatory",
               "non-ambulatory": "non_ambulatory"}.get(status, "ambulatory_unknown"))
    optional = {
        "pediatric": facts.pediatric, "age_unknown": facts.age_unknown, "pregnant": facts.pregnancy is not None,
        "recurrence": facts.recurrence, "joa_recorded": facts.joa is not None,
        "mri_thoracic_only": facts.mri_thoracic is not None and facts.mri_entire_spine is None,
        "multilevel_thoracic": facts.multilevel_thoracic, "minor_trauma": facts.injury is not None,
        "decompression_ordered": facts.decompression_ordered is not None,
        "undated_decompression": facts.undated_decompression is not None,
        "unconfirmed_compression": facts.unconfirmed_compression, "competing_cause": bool(facts.competing),
        "earlier_operation": facts.earlier_operation is not None,
        "late_radiotherapy": (facts.days_since_surgery or 0) > RADIOTHERAPY_LATE_DAYS,
    }
    flags |= {name for name, holds in optional.items() if holds}
    if facts.pediatric or facts.age_unknown:
        flags.add("no_adult_dose")
    if {"no_adult_dose", "late_radiotherapy"} & flags:
        flags.add("referral_without_dose")
    return frozenset(flags)
