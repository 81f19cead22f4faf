"""A JSON number beyond a double (1e400) inside a prefetch resource: valid JSON, invalid FHIR (a decimal is at most a
double here), so the resource holding it is left out and named like any invalid resource, and the call is answered
(../shared/docs/cds-hooks.md: only a broken envelope is a 400). orjson refuses such a number, which made the whole
call a 400. Bodies built here, as bytes: Python's JSON cannot write 1e400."""
import datetime as dt
import time

import orjson
import pytest
import responses

from service.fhir.prefetch import PrefetchResolver
from tests.fhir_records import (COMPRESSION_ICD, HEMANGIOMA_T7_AGGRESSIVE, PATIENT_ID, SELECTOR, T7, concept,
                                condition, day, hook_request, observation, patient, searchset, stay_on, today, topics)

TODAY = dt.datetime.now(dt.timezone.utc).date()
_clock = stay_on(TODAY)
BIG = "__BIG__"         # replaced in the body's bytes by the number
NUMBERS = ["1e400", "-1e400", "1E+999", "1" * 400, "-" + "9" * 400 + ".5"]


def _d(days: int) -> str:
    return day(days, since=today())


def _chart(*more) -> list[dict]:
    return [patient("1968-04-02"), condition(HEMANGIOMA_T7_AGGRESSIVE, sites=[concept(*T7)], onset=_d(10), id="hem"),
            condition(COMPRESSION_ICD, onset=_d(5), id="cmp"), *more]


def _motor_score(value) -> dict:
    """A lower-extremity motor score: read by the pre-operative cards (rapid deterioration)."""
    return observation("lower-extremity-motor-score", _d(1), id="motor", valueQuantity={"value": value})


def _heart_rate(value, rid: str = "hr") -> dict:
    return observation(("http://loinc.org", "8867-4", "Heart rate"), _d(1), id=rid, valueQuantity={"value": value})


def _raw(body: dict, number: str) -> bytes:
    raw = orjson.dumps(body)
    assert raw.count(b'"' + BIG.encode() + b'"') >= 1
    return raw.replace(b'"' + BIG.encode() + b'"', number.encode())


def _post(client, raw: bytes, hook: str = "patient-view"):
    return client.post(f"/cds-services/avh-{hook}", data=raw, content_type="application/json")


def _details(cards: list[dict]) -> str:
    return "\n".join(card.get("detail", "") for card in cards)


@pytest.fixture(params=["small", "large"])
def padding(request) -> list[dict]:
    """A small body (orjson decodes it) or one of more than lazyjson.SMALLEST (simdjson refuses it first)."""
    return [] if request.param == "small" else [_heart_rate(60 + i % 40, f"hr-{i}") for i in range(400)]


@pytest.mark.parametrize("number", NUMBERS)
def test_an_observation_with_a_number_beyond_a_double_is_left_out_and_named(client, caplog, number, padding):
    raw = _raw(hook_request("patient-view", PATIENT_ID, _chart(_motor_score(BIG), *padding)), number)
    response = _post(client, raw)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    expected = client.post("/cds-services/avh-patient-view",
                           json=hook_request("patient-view", PATIENT_ID, _chart(*padding))).json["cards"]
    assert topics(response.json["cards"]) == topics(expected)
    assert "Observation/motor: invalid FHIR at valueQuantity.value: a number beyond a double" \
        in _details(response.json["cards"])
    assert "left out invalid Observation: invalid FHIR at valueQuantity.value: a number beyond a double" in caplog.text


def test_a_scope_condition_with_an_extension_beyond_a_double_is_named_on_the_data_unavailable_card(client):
    compression = condition(COMPRESSION_ICD, onset=_d(5), id="cmp",
                            extension=[{"url": "http://example.org/size", "valueDecimal": BIG}])
    chart = _chart()[:2] + [compression]
    response = _post(client, _raw(hook_request("patient-view", PATIENT_ID, chart), "1e400"))
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    unavailable = [c for c in response.json["cards"] if c["source"]["topic"]["code"] == "data-unavailable"]
    assert unavailable and "Condition/cmp" in unavailable[0]["detail"]


def test_an_irrelevant_resource_beyond_a_double_changes_nothing(client):
    raw = _raw(hook_request("patient-view", PATIENT_ID, _chart(_heart_rate(BIG))), "1e400")
    response = _post(client, raw)
    assert response.status_code == 200
    expected = client.post("/cds-services/avh-patient-view", json=hook_request("patient-view", PATIENT_ID, _chart()))
    assert topics(response.json["cards"]) == topics(expected.json["cards"])
    assert "hr" not in _details(response.json["cards"])


def test_a_patient_beyond_a_double_is_left_out_as_invalid(client):
    """The Patient, sent alone under its key: left out (its age unknown), not a 400."""
    chart = _chart()
    chart[0] = patient("1968-04-02", extension=[{"url": "http://example.org/weight", "valueDecimal": BIG}])
    response = _post(client, _raw(hook_request("patient-view", PATIENT_ID, chart), "1e400"))
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert f"Patient/{PATIENT_ID}: invalid FHIR at extension.0.valueDecimal: a number beyond a double" \
        in _details(response.json["cards"])


def test_a_bundle_field_beyond_a_double_is_read_as_one_of_the_wrong_type(client):
    """Not a resource's but the Bundle's (its total, an entry's search score): read as a total that is no integer
    is, left aside."""
    body = hook_request("patient-view", PATIENT_ID, _chart())
    body["prefetch"]["conditions"]["total"] = BIG
    body["prefetch"]["conditions"]["entry"][0]["search"] = {"mode": "match", "score": BIG}
    response = _post(client, _raw(body, "1e400"))
    assert response.status_code == 200
    assert "surgical-decompression" in topics(response.json["cards"])


@pytest.mark.parametrize("hook", ["order-sign", "patient-view"])
def test_a_number_beyond_a_double_outside_prefetch_is_a_400_naming_it(client, hook):
    body = hook_request(hook, PATIENT_ID, _chart())
    if hook == "order-sign":
        body["context"]["draftOrders"]["entry"] = [{"resource": {"resourceType": "ServiceRequest", "id": "x",
                                                                 "quantityQuantity": {"value": BIG}}}]
        where = "context.draftOrders.entry.0.resource.quantityQuantity.value"
    else:
        body["fhirAuthorization"] = {"access_token": "t", "token_type": "Bearer", "expires_in": BIG,
                                     "scope": "patient/*.read", "subject": "app"}
        where = "fhirAuthorization.expires_in"
    response = _post(client, _raw(body, "1e400"), hook)
    assert response.status_code == 400
    assert "beyond a double" in response.json["message"] and where in response.json["message"]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json_a_400_naming_them(client, token):
    response = _post(client, _raw(hook_request("patient-view", PATIENT_ID, _chart(_motor_score(BIG))), token))
    assert response.status_code == 400
    assert token.lstrip("-") in response.json["message"]


@pytest.mark.parametrize("where", ["prefetch", "context"])
@pytest.mark.parametrize("number", ["1" * (1 << 20), "0." + "0" * (1 << 20) + "1", "1e" + "9" * (1 << 20)])
def test_a_number_of_a_mebibyte_is_answered_at_once(client, where, number):
    """Never a 500 or a hang: Python's int() of 100,000 digits costs the square of their number and refuses more than
    sys.int_max_str_digits, so a long integer is read as a float (as orjson reads one beyond 64 bits)."""
    body = hook_request("patient-view", PATIENT_ID, _chart(_motor_score(BIG)))
    if where == "context":
        body["context"]["extra"] = BIG
    started = time.monotonic()
    response = _post(client, _raw(body, number))
    assert time.monotonic() - started < 5
    assert response.status_code in (200, 400, 413), response.get_data(as_text=True)[:300]


@pytest.mark.parametrize("at", ["a key's value", "an array for a key", "prefetch"])
def test_a_prefetch_value_or_prefetch_that_is_a_number_beyond_a_double_is_a_400(client, at):
    """Not an object or null, as any number there: a 400 naming it, never a 500 (the request's schema check cannot
    read what is not JSON)."""
    body = hook_request("patient-view", PATIENT_ID, _chart())
    if at == "prefetch":
        body["prefetch"] = BIG
    else:
        body["prefetch"]["conditions"] = BIG if at == "a key's value" else [BIG]
    response = _post(client, _raw(body, "1e400"))
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert "beyond a double" in response.json["message"]


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def test_a_fetched_page_with_a_number_beyond_a_double_leaves_out_its_resource(rsps):
    """A fhirServer's answer holding 1e400 in a resource: that resource marked to be left out, the page read (it was
    a key unavailable: 'fhirServer answered with invalid or truncated JSON')."""
    valid = {**_motor_score(12), "id": "motor-2"}
    page = _raw(searchset([_motor_score(BIG), valid]), "1e400")
    rsps.add("GET", "https://ehr.example/fhir/Observation", body=page, content_type="application/fhir+json")
    resolver = PrefetchResolver(wanted=SELECTOR.wanted)
    result = resolver.resolve({"observations": "Observation?patient={{context.patientId}}"},
                              {"context": {"patientId": PATIENT_ID}, "fhirServer": "https://ehr.example/fhir"})
    assert result.sources == {"observations": "fetched"} and not result.unavailable
    assert [type(r).__name__ for r in result.resources] == ["BeyondDouble", "dict"]
