"""The derivation's functions that branch `facts` rewrote, as they were at 5d28dcc: the oracle of
tests/test_facts_differential.py, which checks that the record indexed once per call (ValueSets.sets_of,
facts.Entries) derives the same facts. Everything else is the service's own (service/clinical/facts.py), imported
below, so only what changed is kept twice. Not imported by the service; delete it with the differential test when
the pathway next changes on purpose (do not edit it to match)."""
from __future__ import annotations

import datetime as dt

from service.clinical.record import PatientRecord
from service.clinical.valuesets import ValueSets, codings, in_set
from service.clinical.facts import (  # noqa: F401 (moment, facts_at: unchanged, the test calls them here)
    ABATEMENT_FORMS, ChartFacts, Deterioration, EARLIEST, Evidence, Facts, INJURY_BEFORE_EPISODE, MOTOR_DROP,
    OBSERVATION_CONCEPTS, OBSERVATION_EXCLUDED, Pregnancy, RADIOTHERAPY_GIVEN, REPORT_COUNTS, Readings,
    UNCONFIRMED_VERIFICATION, WALKING_WORDS, birth, condition_start, counts, day_of, decompressions_in_progress,
    dexamethasone_course, earlier_operation, episode_window, evidence, facts_at, in_window, instant, instant_of,
    is_active, is_deceased, is_ordered, is_recurrent, is_vertebral_hemangioma, joa_score, label_of, latest_of,
    levels_of, moment, motor_score, multilevel_thoracic, observation_date, out_of_scope, procedure_date, reading,
    ref_of, report_date, request_date, said_once, same_lesion, shift, sorted_levels, status_code, the_operation,
    undated_decompression, walking_value, worsenings)


def the_episode(compressions: list, born) -> object | None:
    """The latest (by start) active counting compression, else the latest counting one. Ties: active first,
    then one with onset[x], then the lowest id."""
    if not compressions:
        return None

    def rank(c):
        start, source = condition_start(c, born)
        return (not is_active(c), -(start - EARLIEST).total_seconds() if start else float("inf"),
                source != "onset", c.id or "")
    return min(compressions, key=rank)


def _coded(resources, codes) -> list:
    return [r for r in resources if in_set(r.code, codes)]


def done_in_episode(record: PatientRecord, vs: ValueSets, name: str, window, born) -> list[tuple[dt.datetime | None, Evidence]]:
    out = []
    for p in _coded(record.of("Procedure"), vs[name]):
        when = procedure_date(p, born)
        if p.status == "completed" and in_window(when, window):
            out.append((when, evidence(p, p.code, when, vs)))
    return out


def ordered_in_episode(record: PatientRecord, vs: ValueSets, name: str, window) -> list[tuple[dt.datetime | None, Evidence]]:
    out = []
    for r in _coded(record.of("ServiceRequest"), vs[name]):
        when = request_date(r)
        if is_ordered(r) and in_window(when, window):
            out.append((when, evidence(r, r.code, when, vs, f"{label_of(r.code, vs)} (ordered)")))
    return out


def reported_in_episode(record: PatientRecord, vs: ValueSets, name: str, window) -> list[tuple[dt.datetime | None, Evidence]]:
    out = []
    for r in _coded(record.of("DiagnosticReport"), vs[name]):
        when = report_date(r)
        if r.status in REPORT_COUNTS and in_window(when, window):
            out.append((when, evidence(r, r.code, when, vs)))
    return out


def workup(record: PatientRecord, vs: ValueSets, name: str, window, born) -> Evidence | None:
    """Done, reported or ordered in the episode: the latest such entry."""
    return latest_of(done_in_episode(record, vs, name, window, born) + reported_in_episode(record, vs, name, window)
                     + ordered_in_episode(record, vs, name, window))


def decompressions(record: PatientRecord, vs: ValueSets, born) -> list[tuple[object, dt.datetime | None]]:
    return [(p, procedure_date(p, born)) for p in _coded(record.of("Procedure"), vs["decompression-surgery"])]


def radiotherapy_since(record: PatientRecord, vs: ValueSets, since: dt.datetime | None, window, born,
                       ever: bool = False) -> Evidence | None:
    """A radiotherapy Procedure given on or after `since` (undated counts), or a radiotherapy order in the
    episode whatever its date; `ever`: any radiotherapy on record counts."""
    found = []
    for p in _coded(record.of("Procedure"), vs["radiotherapy"]):
        when = procedure_date(p, born)
        if p.status in RADIOTHERAPY_GIVEN and (ever or when is None or since is None or when.date() >= since.date()):
            found.append((when, evidence(p, p.code, when, vs)))
    found += ordered_in_episode(record, vs, "radiotherapy", None if ever else window)
    return latest_of(found)


def readings_by_concept(record: PatientRecord, vs: ValueSets) -> Readings:
    """Counting, dated observations by the value set of their code, oldest first (ties by id): one pass."""
    found: Readings = {name: [] for name in OBSERVATION_CONCEPTS}
    concepts = [(name, vs[name]) for name in OBSERVATION_CONCEPTS]
    for o in record.of("Observation"):
        if o.status in OBSERVATION_EXCLUDED:
            continue
        codes = codings(o.code)
        names = [name for name, concept in concepts if not concept.isdisjoint(codes)]
        when = observation_date(o) if names else None
        for name in names if when else ():
            found[name].append((when, o))
    for series in found.values():
        series.sort(key=lambda item: (item[0], item[1].id or ""))
    return found


def deterioration(readings: Readings, vs: ValueSets, conditions: list, window, born) -> Deterioration:
    stated, in_episode = [], []
    for c in conditions:
        if not in_set(c.code, vs["rapid-deterioration"]):
            continue
        dates = [d for d in (condition_start(c, born)[0], instant(c.recordedDate)) if d]
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


def ambulatory_status(readings: Readings, vs: ValueSets, conditions: list, born) -> tuple[str | None, Evidence | None]:
    """The latest ambulatory-status observation; without one, a complete paraplegia means non-ambulatory."""
    walking = [(when, o) for when, o in readings["ambulatory-status"] if walking_value(o)]
    if walking:
        when, o = walking[-1]
        value = walking_value(o)
        return value, reading(o, WALKING_WORDS[value], when, vs)
    paraplegia = sorted((c for c in conditions if is_active(c) and in_set(c.code, vs["non-ambulatory-deficit"])),
                        key=lambda c: c.id or "")
    if paraplegia:
        c = paraplegia[0]
        return "non-ambulatory", evidence(c, c.code, condition_start(c, born)[0], vs)
    return None, None


def pregnancy(readings: Readings, vs: ValueSets, conditions: list, born) -> Pregnancy:
    found = []
    for c in conditions:
        if is_active(c) and in_set(c.code, vs["pregnancy"]):
            start = condition_start(c, born)[0]
            if start:
                found.append((start, evidence(c, c.code, start, vs)))
    statuses = tuple((when, in_set(o.valueCodeableConcept, vs["pregnancy-status-pregnant"]),
                      reading(o, label_of(o.valueCodeableConcept, vs), when, vs))
                     for when, o in readings["pregnancy-status"] if o.valueCodeableConcept)
    return Pregnancy(tuple(sorted(found, key=lambda item: (item[0], item[1].ref), reverse=True)), statuses)


def minor_trauma(conditions: list, vs: ValueSets, episode_start: dt.datetime | None, born) -> Evidence | None:
    """An injury starting in the INJURY_BEFORE_EPISODE before the episode start (undated: never)."""
    if episode_start is None:
        return None
    found = []
    for c in conditions:
        if in_set(c.code, vs["injury"]):
            start = condition_start(c, born)[0]
            if start and shift(episode_start, -INJURY_BEFORE_EPISODE) <= start <= episode_start:
                found.append((start, evidence(c, c.code, start, vs)))
    return latest_of(found)


def chart_facts(record: PatientRecord, vs: ValueSets) -> ChartFacts:
    common = dict(patient_ref=f"Patient/{record.patient_id}", unavailable=record.unavailable, left_out=record.left_out)
    if is_deceased(record):
        return out_of_scope(common, "the patient is deceased", deceased=True)
    born = birth(record)
    conditions = [c for c in record.of("Condition") if counts(c)]
    compression = the_episode([c for c in conditions if in_set(c.code, vs["spinal-cord-compression"])], born)
    if compression is None:
        return out_of_scope(common, "no spinal cord compression on record")
    compression_levels = levels_of(compression, vs)
    hemangiomas = [(c, levels_of(c, vs)) for c in conditions if is_vertebral_hemangioma(c, vs)]   # with their levels
    if not hemangiomas:
        return out_of_scope(common, "no vertebral hemangioma on record")
    lesion_levels = [(h, levels) for h, levels in hemangiomas if same_lesion(levels, compression_levels)]
    lesion = [h for h, _ in lesion_levels]
    if not lesion:
        return out_of_scope(common, f"the hemangioma and the compression ({', '.join(sorted_levels(compression_levels))})"
                                    " lie more than one level apart")

    start, source = condition_start(compression, born)
    window = episode_window(start, source)
    found = decompressions(record, vs, born)
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
    speaking = min(lesion, key=lambda h: (not is_active(h), status_code(h.verificationStatus) in UNCONFIRMED_VERIFICATION,
                                          -((condition_start(h, born)[0] or EARLIEST) - EARLIEST).total_seconds(),
                                          h.id or ""))
    every_level = set().union(*(levels for _, levels in lesion_levels)) | compression_levels
    if operation is not None:
        radiotherapy = radiotherapy_since(record, vs, instant_of(operation), window, born)
    elif earlier is not None:
        radiotherapy = radiotherapy_since(record, vs, instant_of(earlier), window, born)
    else:
        radiotherapy = radiotherapy_since(record, vs, None, window, born, ever=True)
    competing = tuple(evidence(c, c.code, condition_start(c, born)[0], vs)
                      for c in sorted(conditions, key=lambda c: c.id or "")
                      if is_active(c) and in_set(c.code, vs["competing-cause"]))
    readings = readings_by_concept(record, vs)
    status, status_evidence = ambulatory_status(readings, vs, conditions, born)
    facts = Facts(
        in_pathway=True,
        stage=stage,
        recurrence=recurrence,
        episode_start=day_of(start),
        episode_start_from=source,
        window_start=day_of(window),
        hemangioma=evidence(speaking, speaking.code, condition_start(speaking, born)[0], vs),
        hemangioma_ref=ref_of(speaking),
        hemangioma_verification=status_code(speaking.verificationStatus) or "confirmed",
        compression=evidence(compression, compression.code, start, vs),
        compression_verification=status_code(compression.verificationStatus) or "confirmed",
        competing=competing,
        levels=sorted_levels(every_level),
        multilevel_thoracic=multilevel_thoracic(set().union(*(levels for _, levels in hemangiomas))),
        surgery=operation,
        earlier_operation=earlier,
        undated_decompression=undated_decompression(found, vs),
        decompression_ordered=latest_of(ordered_in_episode(record, vs, "decompression-surgery", window)),
        posterior_fixation=latest_of(done_in_episode(record, vs, "posterior-stabilization", window, born)
                                     + ordered_in_episode(record, vs, "posterior-stabilization", window)),
        embolization=latest_of(done_in_episode(record, vs, "embolization", window, born)
                               + ordered_in_episode(record, vs, "embolization", window)),
        radiotherapy=radiotherapy,
        mri_entire_spine=workup(record, vs, "mri-entire-spine", window, born),
        mri_thoracic=workup(record, vs, "mri-thoracic-spine", window, born),
        spine_cta=workup(record, vs, "spine-ct-angiography", window, born),
        ambulatory_status=status,
        ambulatory_evidence=status_evidence,
        dexamethasone=dexamethasone_course(record, vs, window),
        injury=minor_trauma(conditions, vs, start, born),
        joa=joa_score(readings, vs),
        **common,
    )
    return ChartFacts(facts, born, deterioration(readings, vs, conditions, window, born),
                      pregnancy(readings, vs, conditions, born), decompressions_in_progress(found, vs))
