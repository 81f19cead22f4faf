"""Hostile review, answers that are not all there is (issue 15, item 15): a FHIR search answer whose `total`
exceeds the entries read and that has no `next` link (a server, or a proxy, that cut the page silently) is
incomplete, never complete. Each test's docstring names the attack."""
import pytest
import responses

from service.fhir.prefetch import PrefetchFailed
from tests.fhir_records import COMPRESSION, HEMANGIOMA, condition, day, patient, searchset, today, walking
from tests.test_prefetch import resolver, rsps

__all__ = ["resolver", "rsps"]     # fixtures used by the tests below

BASE = "http://ehr.test/fhir"
TEMPLATES = {"patient": "Patient/{{context.patientId}}", "conditions": "Condition?patient={{context.patientId}}",
             "observations": "Observation?patient={{context.patientId}}"}
CONDITIONS = [condition(HEMANGIOMA, onset=day(10, since=today()), patient_id="p1", id="c1"), condition(COMPRESSION, onset=day(10, since=today()), patient_id="p1", id="c2")]
OBS = [walking("ambulatory", day(1, since=today()), patient_id="p1", id=oid) for oid in ("o1", "o2")]


def hook(prefetch=None, server=BASE):
    body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"patientId": "p1", "userId": "Practitioner/u1"}}
    if server:
        body["fhirServer"] = server
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def cut(resources, total, keep=1, next_url=None):
    bundle = searchset(resources[:keep], next_url)
    bundle["total"] = total
    return bundle


def test_a_fetched_search_cut_short_is_unavailable(rsps, resolver):
    """Attack: fhirServer answers the Observation search with total 2, one entry and no next link."""
    rsps.get(f"{BASE}/Patient/p1", json=patient(patient_id="p1"))
    rsps.get(f"{BASE}/Condition", json=searchset(CONDITIONS))
    rsps.get(f"{BASE}/Observation", json=cut(OBS, total=2))
    result = resolver.resolve(TEMPLATES, hook())
    assert "fewer entries than its total" in result.unavailable["Observation"]
    assert result.sources["observations"] == "unavailable"


def test_a_fetched_condition_search_cut_short_is_a_412(rsps, resolver):
    """Attack: the Condition search (which decides scope) answers total 2 with one entry and no next link."""
    rsps.get(f"{BASE}/Patient/p1", json=patient(patient_id="p1"))
    rsps.get(f"{BASE}/Condition", json=cut(CONDITIONS, total=2))
    rsps.get(f"{BASE}/Observation", json=searchset(OBS))
    with pytest.raises(PrefetchFailed) as failed:
        resolver.resolve(TEMPLATES, hook())
    [(key, problem)] = failed.value.failures
    assert key == "conditions" and problem.code == "incomplete"


def test_a_last_page_short_of_the_first_pages_total_is_unavailable(rsps, resolver):
    """Attack: paging that ends early: page 1 says total 3 and links page 2, page 2 holds one entry, no next."""
    rsps.get(f"{BASE}/Patient/p1", json=patient(patient_id="p1"))
    rsps.get(f"{BASE}/Condition", json=searchset(CONDITIONS))
    first = cut(OBS, total=3, next_url=f"{BASE}/Observation?page=2")
    rsps.get(f"{BASE}/Observation?page=2", json=searchset(OBS[1:]) | {"total": 3},
             match=[responses.matchers.query_param_matcher({"page": "2"})])
    rsps.get(f"{BASE}/Observation", json=first, match=[responses.matchers.query_param_matcher({"patient": "p1"})])
    result = resolver.resolve(TEMPLATES, hook())
    assert "Observation" in result.unavailable


def test_complete_answers_with_total_and_included_resources_stay_complete(rsps, resolver):
    """Not an attack: the total counts matches, not included resources; pages that add up are complete."""
    rsps.get(f"{BASE}/Patient/p1", json=patient(patient_id="p1"))
    rsps.get(f"{BASE}/Condition", json=searchset(CONDITIONS))
    page = searchset(OBS)
    page["entry"].append({"resource": patient(patient_id="p1"), "search": {"mode": "include"}})
    rsps.get(f"{BASE}/Observation", json=page)
    result = resolver.resolve(TEMPLATES, hook())
    assert result.unavailable == {} and result.sources["observations"] == "fetched"


def test_a_sent_search_cut_short_is_fetched_again_whole(rsps, resolver):
    """Attack: the client's prefetch holds a searchset with total 2, one entry, no next link; with fhirServer
    the key is read whole from it."""
    rsps.get(f"{BASE}/Observation", json=searchset(OBS))
    result = resolver.resolve(TEMPLATES, hook({"patient": patient(patient_id="p1"), "conditions": searchset(CONDITIONS),
                                               "observations": cut(OBS, total=2)}))
    assert result.unavailable == {} and result.sources["observations"] == "fetched"
    assert sorted(r["id"] for r in result.resources if r["resourceType"] == "Observation") == ["o1", "o2"]


def test_a_sent_search_cut_short_without_fhir_server_is_unavailable(resolver):
    """Attack: the same short searchset with no fhirServer to read the rest from."""
    result = resolver.resolve(TEMPLATES, hook({"patient": patient(patient_id="p1"), "conditions": searchset(CONDITIONS),
                                               "observations": cut(OBS, total=2)}, server=None))
    assert "fewer entries than its search's total" in result.unavailable["Observation"]


@pytest.mark.parametrize("entries", ["x", {"resource": {}}, [1], ["x"], [None], [{"resource": "y"}], [{"resource": [1]}]],
                         ids=["entry-string", "entry-object", "entry-number", "entry-string-item", "entry-null",
                              "resource-string", "resource-list"])
def test_a_fetched_bundle_with_junk_entries_is_unavailable_not_empty(rsps, resolver, entries):
    """Attack: fhirServer answers the Observation search with `"entry": "x"` (or entries that are numbers, strings,
    null, or whose resource is a string): they were skipped, so the key read as a complete, empty search ("no
    observations") and cards whose reason is that absence could fire."""
    rsps.get(f"{BASE}/Patient/p1", json=patient(patient_id="p1"))
    rsps.get(f"{BASE}/Condition", json=searchset(CONDITIONS))
    rsps.get(f"{BASE}/Observation", json={**searchset([]), "entry": entries})
    result = resolver.resolve(TEMPLATES, hook())
    assert "entries are not FHIR entries" in result.unavailable["Observation"]
    assert result.sources["observations"] == "unavailable"


def test_a_sent_condition_bundle_with_junk_entries_is_a_412(resolver):
    """Attack: the EHR's prefetched Condition Bundle (which decides scope) holds `"entry": [1, {"resource": "y"}]`
    besides a real Condition: read as the one Condition, it passed for the whole list."""
    bundle = searchset(CONDITIONS)
    bundle["entry"] += [1, {"resource": "y"}]
    with pytest.raises(PrefetchFailed) as failed:
        resolver.resolve(TEMPLATES, hook({"patient": patient(patient_id="p1"), "conditions": bundle,
                                          "observations": searchset(OBS)}, server=None))
    [(key, problem)] = failed.value.failures
    assert key == "conditions" and problem.code == "invalid" and "the client sent a Bundle" in problem.reason


def test_a_bundle_entry_without_a_resource_is_still_read(rsps, resolver):
    """Attack (on the fix above): FHIR allows an entry with no resource; the search stays complete."""
    rsps.get(f"{BASE}/Patient/p1", json=patient(patient_id="p1"))
    rsps.get(f"{BASE}/Condition", json=searchset(CONDITIONS))
    bundle = searchset(OBS)
    bundle["entry"].append({"fullUrl": "urn:uuid:0d5e5c2e-1b1e-4c53-9f57-2a3c8f1e0b11"})
    rsps.get(f"{BASE}/Observation", json=bundle)
    result = resolver.resolve(TEMPLATES, hook())
    assert result.unavailable == {} and len(result.resources) == 5
