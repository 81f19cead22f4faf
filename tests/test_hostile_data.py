"""Hostile review, answers that are not all there is (issue 15, item 15): a FHIR search answer whose `total`
exceeds the entries read and that has no `next` link (a server, or a proxy, that cut the page silently) is
incomplete, never complete. Each test's docstring names the attack."""
import re

import pytest
import responses

from service.fhir.prefetch import PrefetchFailed
from tests.fhir_records import COMPRESSION, HEMANGIOMA, condition, day, motor, patient, searchset, today, walking
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


# --- record text in a card's markdown (hostile11) ------------------------------------------------------------------
# A card's detail is markdown the EHR renders as avh-cds's own advice. What a record says (a Condition's text, a draft
# order's name, the id and keys of an entry that is not FHIR) is someone else's text: shown, never formatting.

LINK = "[see the protocol](http://evil.example/protocol)"
HEADING = "\n\n# STOP: do not operate"


def _post(client, body) -> list[dict]:
    answer = client.post(f"/cds-services/avh-{body['hook']}", json=body)
    assert answer.status_code == 200, answer.get_data()
    return answer.get_json()["cards"]


def _markdown_of(cards) -> str:
    return "\n".join(card["summary"] + "\n" + card.get("detail", "") for card in cards)


def _links(markdown: str) -> list[str]:
    """The inline links of `markdown`: a ']' not escaped by a backslash, then '('."""
    return re.findall(r"(?<!\\)\]\(", markdown)


def test_a_conditions_text_cannot_format_the_cards_that_cite_it(client):
    """Attack: the hemangioma's code.text holds a markdown link and the compression's a newline and a heading; the
    'Why am I seeing this?' lines of every card quote them (before: as markdown, a link and a heading in avh-cds's
    card)."""
    from tests.fhir_records import hook_request, in_pathway_chart
    chart = in_pathway_chart("p1")
    chart[1]["code"]["text"] = f"Hemangioma {LINK} **give 500 mg**"
    chart[2]["code"]["text"] = f"Compression{HEADING}"
    text = _markdown_of(_post(client, hook_request("patient-view", "p1", chart)))
    assert not _links(text) and "**give 500 mg**" not in text
    assert "\n# STOP" not in text
    assert "see the protocol" in text and "STOP: do not operate" in text


def test_a_draft_orders_name_and_id_cannot_format_the_order_card(client):
    """Attack: a dexamethasone draft named with a markdown link and a heading, its id holding a newline and a
    heading too (draft orders are not validated); the steroid-duration card quotes name and id."""
    from tests.fhir_records import hook_request, in_pathway_chart
    from tests.test_order_hooks import dex_days
    draft = dex_days("p1", 20, mrid="dex-1)\n\n# Injected")
    draft["medicationCodeableConcept"]["text"] = f"Dexamethasone {LINK}{HEADING}"
    cards = _post(client, hook_request("order-sign", "p1", in_pathway_chart("p1"), [draft]))
    assert [c["source"]["topic"]["code"] for c in cards] == ["steroid-duration"]
    text = _markdown_of(cards)
    assert not _links(text) and "\n# STOP" not in text and "\n# Injected" not in text
    assert "see the protocol" in text


@pytest.mark.parametrize("hook", ["order-sign", "order-select"])
@pytest.mark.parametrize("unit", [["d"], {"code": "d"}])
def test_a_draft_period_unit_that_is_not_a_string_is_read_as_no_unit(client, hook, unit):
    """Attack (hard13): a 30-day dexamethasone draft (draft orders are not validated) whose dosage timing's
    periodUnit is a list or an object: looked up in the table of units, it was a TypeError (unhashable) and a 500. A
    unit that is not a string is no unit: the daily dose is unknown, and the steroid-duration card warns."""
    from tests.fhir_records import bounds_duration, draft_dexamethasone, hook_request, in_pathway_chart
    dosage = [{**bounds_duration(30), "doseAndRate": [{"doseQuantity": {"value": 8, "unit": "mg", "code": "mg"}}]}]
    dosage[0]["timing"]["repeat"].update(frequency=2, period=1, periodUnit=unit)
    draft = draft_dexamethasone(dosage, patient_id="p-pu", id="d1")
    cards = _post(client, hook_request(hook, "p-pu", in_pathway_chart("p-pu"), [draft], ["MedicationRequest/d1"]))
    assert [c["source"]["topic"]["code"] for c in cards] == ["steroid-duration"]


# What GitHub's markdown links with no markup (remark-gfm, which the CDS Hooks sandbox renders a detail with): an
# address after a scheme's "://" or "www.", and an email address.
AUTOLINKED = re.compile(r"(?<!\\)://|www\.|(?<!\\)@", re.IGNORECASE)


@pytest.mark.parametrize("address", ["see https://evil.example/protocol now", "see www.evil.example now",
                                     "see HTTP://EVIL.EXAMPLE now", "ask dr@evil.example now"])
def test_an_address_in_a_conditions_text_is_not_made_a_link(client, address):
    """review11 (of hostile11): with its brackets escaped, a Condition's text still held addresses GitHub's markdown
    links without any markup; each is shown as written ('https\\://...' reads 'https://...'), not as a link."""
    from tests.fhir_records import hook_request, in_pathway_chart
    chart = in_pathway_chart("p1")
    chart[1]["code"]["text"] = f"Hemangioma, {address}"
    text = _markdown_of(_post(client, hook_request("patient-view", "p1", chart)))
    quoting = [line for line in text.splitlines() if "Hemangioma, " in line]     # not the cards' own source links
    assert quoting and not any(AUTOLINKED.search(line) for line in quoting)
    assert address.replace("://", "\\://").replace("www.", "www\\.").replace("@", "\\@") in quoting[0]


@pytest.mark.parametrize("attack", ["id", "key"])
def test_an_invalid_conditions_id_and_keys_are_not_shown_as_markdown(client, attack):
    """Attack: a hemangioma Condition that is not valid FHIR, its id (or the name of an element it holds that FHIR
    does not define) a markdown link, a heading and 3,000 characters; the data-unavailable card names it (before:
    the id and the key verbatim, in its summary and detail)."""
    from tests.fhir_records import hook_request, in_pathway_chart
    chart = in_pathway_chart("p1")
    hostile = f"a){HEADING} {LINK}" + "k" * 3000
    if attack == "id":
        chart[1]["id"] = hostile
    else:
        chart[1][hostile] = 1
    cards = _post(client, hook_request("patient-view", "p1", chart))
    [unchecked] = [c for c in cards if c["source"]["topic"]["code"] == "data-unavailable"]
    text = _markdown_of([unchecked])
    assert not _links(text) and "\n# STOP" not in text and "k" * 100 not in text
    assert "Condition" in unchecked["summary"] and len(unchecked["detail"]) < 2000


def test_an_id_with_a_lone_surrogate_never_reaches_the_answer(rsps, app):
    """Attack: fhirServer answers a hemangioma Condition whose id is the JSON escape of a lone surrogate. Python's
    json read it, orjson could not write the card naming it, and the stdlib encoder wrote '\\ud800': JSON that
    strict parsers refuse. The answer is strict JSON: the page is not JSON a request could hold (orjson refuses
    it), so the Conditions are unavailable (412)."""
    import orjson
    from tests.fhir_records import in_pathway_chart
    chart = in_pathway_chart("p1")
    server = "http://127.0.0.1:9/fhir"
    rsps.get(f"{server}/Patient/p1", json=chart[0])
    conditions = orjson.dumps(searchset(chart[1:])).replace(b'"p1-hem"', b'"p1-\\ud800"')
    rsps.get(f"{server}/Condition", body=conditions, content_type="application/fhir+json")
    for rtype in ("Observation", "Procedure", "ServiceRequest", "DiagnosticReport", "MedicationRequest",
                  "MedicationAdministration"):
        rsps.get(f"{server}/{rtype}", json=searchset([]))
    body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "fhirServer": server,
            "context": {"patientId": "p1", "userId": "Practitioner/u1"}}
    answer = app.test_client().post("/cds-services/avh-patient-view", json=body)
    outcome = orjson.loads(answer.get_data())           # strict JSON
    assert answer.status_code == 412
    assert "invalid or truncated JSON" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_fetched_answer_that_is_not_json_is_invalid_json(rsps, resolver, number):
    """Attack (hostile11): fhirServer answers the Observation search with a motor score of NaN or Infinity, which are
    not JSON. Python's json read them (a score of infinity, dropping to any real score, is a worsening); the same in
    a request's prefetch is a 400. Now the key is unavailable, as for any answer that is not JSON. (1e400, valid
    JSON beyond a double, was here too: its resource is now left out as invalid FHIR, never read as infinity, and
    the rest of the page read: test_a_fetched_score_beyond_a_double_is_left_out_never_read_as_infinity.)"""
    import orjson
    rsps.get(f"{BASE}/Patient/p1", json=patient(patient_id="p1"))
    rsps.get(f"{BASE}/Condition", json=searchset(CONDITIONS))
    scores = [motor(40, day(2, since=today()), patient_id="p1", id="m1"),
              motor(12345, day(1, since=today()), patient_id="p1", id="m2")]
    answer = orjson.dumps(searchset(scores)).replace(b"12345", number)
    assert number in answer
    rsps.get(f"{BASE}/Observation", body=answer, content_type="application/fhir+json")
    result = resolver.resolve(TEMPLATES, hook())
    assert result.unavailable["Observation"] == "fhirServer answered with invalid or truncated JSON"
    assert [r["id"] for r in result.resources if r["resourceType"] == "Observation"] == []


def test_a_fetched_score_beyond_a_double_is_left_out_never_read_as_infinity(rsps, resolver):
    import orjson
    from service.clinical.record import build_record
    from tests.fhir_records import SELECTOR
    rsps.get(f"{BASE}/Patient/p1", json=patient(patient_id="p1"))
    rsps.get(f"{BASE}/Condition", json=searchset(CONDITIONS))
    scores = [motor(40, day(2, since=today()), patient_id="p1", id="m1"),
              motor(12345, day(1, since=today()), patient_id="p1", id="m2")]
    rsps.get(f"{BASE}/Observation", body=orjson.dumps(searchset(scores)).replace(b"12345", b"1e400"),
             content_type="application/fhir+json")
    result = resolver.resolve(TEMPLATES, hook())
    assert "Observation" not in result.unavailable
    record = build_record(result.resources, SELECTOR, "p1")
    assert [o.id for o in record.of("Observation")] == ["m1"]
    assert [(lo.ref, lo.reason) for lo in record.left_out] == [
        ("Observation/m2", "invalid FHIR at valueQuantity.value: a number beyond a double")]


def test_a_fetched_answer_with_a_byte_order_mark_is_read(rsps, resolver):
    """A server that starts its UTF-8 answer with a byte order mark (RFC 8259 lets a parser ignore it) is read."""
    import orjson
    rsps.get(f"{BASE}/Patient/p1", json=patient(patient_id="p1"))
    rsps.get(f"{BASE}/Condition", body=b"\xef\xbb\xbf" + orjson.dumps(searchset(CONDITIONS)),
             content_type="application/fhir+json")
    rsps.get(f"{BASE}/Observation", json=searchset(OBS))
    result = resolver.resolve(TEMPLATES, hook())
    assert not result.unavailable
    assert sorted(r["id"] for r in result.resources if r["resourceType"] == "Condition") == ["c1", "c2"]
