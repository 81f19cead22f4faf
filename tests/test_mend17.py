"""mend17: code the review of int16's diff found written twice, and HTTP answers made consistent. Each test names
what it checks; a refactor's behaviour is covered by the tests its commit names."""
import pytest

from service.clinical.elements import read_element
from service.clinical.facts import instant, medication_request_date
from service.clinical.orders import _order_date
from service.clinical.record import _definitions


def _order(*starts, authored="2026-11-01"):
    order = {"resourceType": "MedicationRequest", "id": "dex-1", "status": "active", "intent": "order",
             "subject": {"reference": "Patient/p1"},
             "dosageInstruction": [{"timing": {"repeat": {"boundsPeriod": {"start": start}}}} for start in starts]}
    return order if authored is None else {**order, "authoredOn": authored}


@pytest.mark.parametrize("order, written", [
    (_order("2026-11-20", "2026-11-10T08:00:00+02:00", "2026-11-15"), "2026-11-10T08:00:00+02:00"),
    (_order("2026-11-10T00:30:00+02:00", "2026-11-09"), "2026-11-09"),       # the earlier instant, not the text
    (_order(), "2026-11-01"),                                                # no start: authoredOn
    (_order(authored=None), None),
])
def test_a_medication_order_is_dated_alike_on_record_and_as_a_draft(order, written):
    """orders._order_date (a draft as sent, dated as the version on file) was a second copy of
    facts.medication_request_date's rule (the earliest dosage start, else authoredOn): both read facts.order_date
    now, and give the same date, the draft's as written."""
    _definitions()          # JsonElement's attributes, as the record reader defines them
    assert _order_date(order) == written
    assert medication_request_date(read_element(order)) == (None if written is None else instant(written))


def _line(*quantities, **repeat):
    return {"timing": {"repeat": repeat}, "doseAndRate": [{"doseQuantity": q} for q in quantities]}


MG4, TABLETS = {"value": 4, "code": "mg"}, {"value": 2, "unit": "TAB"}


@pytest.mark.parametrize("lines, daily, other_units", [
    ([_line(MG4, frequency=4, period=1, periodUnit="d")], 16.0, False),
    ([_line({"value": 8, "unit": "mg"}, frequency=1, period=2, periodUnit="d")], 8.0, False),   # a day's dose is one
    ([_line({"value": 0.02, "code": "g"}, count=1)], 20.0, False),
    ([_line(MG4, TABLETS, frequency=1, period=1, periodUnit="d")], 4.0, True),   # the first dose in mg
    ([_line(TABLETS, MG4, frequency=1, period=1, periodUnit="d")], 4.0, True),   # as the chart reads it (mend18)
    ([_line(MG4, frequency=5, period=1, periodUnit="d"), _line(TABLETS, count=1)], 20.0, True),   # above 16 mg
    ([_line(MG4, frequency=2, period=1, periodUnit="d"), _line()], None, False),   # a line states none
    ([_line(MG4)], None, False),                                                    # no timing.repeat
])
def test_a_draft_s_doses_are_read_in_one_pass(lines, daily, other_units):
    """_dosed_in_other_units walked a draft's dosage lines and doses a second time, beside draft_daily_dose: both
    read _dosage_lines now, with the same answers (these pass on the code before it too)."""
    from service.clinical.orders import DraftOrder, _dosed_in_other_units, draft_daily_dose
    resource = {"resourceType": "MedicationRequest", "dosageInstruction": lines}
    assert draft_daily_dose(resource) == daily
    assert _dosed_in_other_units(DraftOrder("MedicationRequest/x", resource, frozenset(), "x")) is other_units


# --- routing redirects say what was wrong with the URL ---------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app as `avh-cds serve` runs it: auth off, the fixture FHIR endpoint on."""
    from service import create_app
    from service.config import Settings
    return create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_LOG_LEVEL": "ERROR"}, fixture_fhir=True,
                                        sqlite_path=tmp_path_factory.mktemp("mend17") / "avh-cds.sqlite3"))


@pytest.mark.parametrize("path, query, message", [
    ("", "", "this URL has an empty path: /"),
    ("", "a=1", "this URL has an empty path: /?a=1"),
    ("/fhir//metadata", "", "this URL has doubled slashes: /fhir/metadata"),
    ("/pathway//", "", "this URL has no trailing slash: /pathway"),
])
def test_a_routing_redirect_says_what_was_wrong_with_the_url(served, path, query, message):
    """routing_redirect said "this URL has doubled slashes" of every redirect werkzeug raised, the one of an empty
    path (a request for the app's root without its slash: PATH_INFO "") too, which has none. Now each says what it
    was; the Location is unchanged."""
    answer = served.test_client().get(environ_overrides={"PATH_INFO": path, "QUERY_STRING": query})
    assert answer.status_code == 308 and answer.json["message"] == message
    assert answer.headers["Location"] == answer.json["location"] == message.split(": ", 1)[1]


# --- HTTP consistency -------------------------------------------------------------------------------------------

def test_options_names_the_allowed_methods_sorted_as_a_405_does(served, monkeypatch):
    """OPTIONS's Allow was werkzeug's list of the URL's methods, made from a set: `HEAD, GET, OPTIONS` in one process,
    `GET, HEAD, OPTIONS` in another (PYTHONHASHSEED). A 405's Allow and `allowed` were sorted. Now OPTIONS's too,
    whatever order werkzeug gives (here the reverse of sorted)."""
    from werkzeug.routing import MapAdapter
    given = MapAdapter.allowed_methods
    monkeypatch.setattr(MapAdapter, "allowed_methods", lambda self, path_info=None:
                        sorted(given(self, path_info), reverse=True))
    client = served.test_client()
    for path, methods in (("/cds-services", "GET, HEAD, OPTIONS"), ("/cds-services/avh-patient-view", "OPTIONS, POST"),
                          ("/healthz", "GET, HEAD, OPTIONS"), ("/fhir/metadata", "GET, HEAD, OPTIONS"),
                          ("/fhir/Patient/_search", "GET, HEAD, OPTIONS, POST")):
        assert client.options(path).headers["Allow"] == methods, path
        refused = client.open(path, method="PUT")
        assert refused.status_code == 405 and refused.headers["Allow"] == methods, path
        if refused.json.get("allowed"):
            assert refused.json["allowed"] == methods.split(", "), path


@pytest.mark.parametrize("sent, merged", [
    ("/fhir//metadata", "/fhir/metadata"), ("//fhir/metadata", "/fhir/metadata"),
    ("/fhir//Patient//avh-01", "/fhir/Patient/avh-01"), ("///fhir/Patient/avh-01", "/fhir/Patient/avh-01"),
    ("//cds-services", "/cds-services"), ("//pathway", "/pathway"), ("//", "/"),
])
def test_a_leading_doubled_slash_is_answered_as_an_inner_one(served, sent, merged):
    """`GET /fhir//metadata` was redirected (308) to /fhir/metadata, `POST /cds-services//avh-patient-view` a 404
    naming /cds-services/avh-patient-view (docs/deployment.md: a call is never redirected); but `//fhir/metadata` was
    served as is, and `POST //cds-services/avh-patient-view` answered as the CDS call (werkzeug strips leading
    slashes before matching). Now both are the doubled-slash redirect: a GET 308 to the path with single slashes,
    a call a 404 naming the URL as sent, a method the route does not answer its 405."""
    answer = served.test_client().get(environ_overrides={"PATH_INFO": sent, "QUERY_STRING": "a=1"})
    assert answer.status_code == 308 and answer.headers["Location"] == answer.json["location"] == merged + "?a=1"
    assert answer.json["message"] == f"this URL has doubled slashes: {merged}?a=1"


@pytest.mark.parametrize("sent", ["//cds-services/avh-patient-view", "/cds-services//avh-patient-view",
                                  "///cds-services/avh-patient-view"])
def test_a_cds_call_with_doubled_slashes_leading_or_not_is_a_404_naming_its_url(served, sent):
    from tests.security_support import hook_request
    client = served.test_client()
    answer = client.post(json=hook_request(), environ_overrides={"PATH_INFO": sent})
    assert answer.status_code == 404 and "Location" not in answer.headers
    assert answer.json == {"error": "not_found",
                           "message": f"no route POST {sent}: the URL is /cds-services/avh-patient-view"}
    refused = client.get(environ_overrides={"PATH_INFO": sent})
    assert refused.status_code == 405 and refused.json["allowed"] == ["OPTIONS", "POST"]
    assert refused.json["message"] == f"GET is not allowed on {sent}; it answers OPTIONS, POST"


def test_a_leading_doubled_slash_is_redirected_with_flask_s_own_host_settings_too(tmp_path):
    """With TRUSTED_HOSTS (code wrapping create_app may set it) Flask makes each request's URL adapter anew, not
    AvhFlask's remembered one: the leading doubled slash is the same redirect there."""
    from service import create_app
    from service.config import Settings
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_LOG_LEVEL": "ERROR"},
                                       sqlite_path=tmp_path / "avh-cds.sqlite3"))
    app.config["TRUSTED_HOSTS"] = ["localhost"]
    answer = app.test_client().get(environ_overrides={"PATH_INFO": "//cds-services"})
    assert answer.status_code == 308 and answer.headers["Location"] == "/cds-services"


@pytest.mark.parametrize("body, query", [("patient=%ff", ""), ("patient=avh-01&code=%C3%28", ""), ("%ff=1", ""),
                                         ("patient=avh-01", "patient=%ff"), ("", "_id=%e9")])
def test_a_fhir_search_whose_parameters_are_not_utf8_once_decoded_is_a_400_naming_it(served, body, query):
    """`POST /fhir/Condition/_search` with the form `patient=%ff`: the body is ASCII, so the check that it is UTF-8
    passed, and werkzeug read the undecodable escape as its text (`%FF`): the search looked for a patient `%FF` and
    answered an empty Bundle (200), as if read; the same in a query string (GET or POST). Now a 400
    OperationOutcome saying what is wrong."""
    client = served.test_client()
    for answer in [client.post(f"/fhir/Condition/_search?{query}", data=body,
                               content_type="application/x-www-form-urlencoded")] \
            + ([client.get(f"/fhir/Condition?{query}")] if query else []):
        assert answer.status_code == 400 and answer.json["resourceType"] == "OperationOutcome"
        [issue] = answer.json["issue"]
        assert issue["code"] == "invalid" and "not UTF-8 once percent-decoded" in issue["diagnostics"]


@pytest.mark.parametrize("encoded, total", [("_id=%61vh-01", 1), ("_id=avh-01", 1), ("_id=%C3%A9", 0)])
def test_a_fhir_search_with_utf8_escapes_is_answered(served, encoded, total):
    client = served.test_client()
    for answer in (client.post("/fhir/Patient/_search", data=encoded, content_type="application/x-www-form-urlencoded"),
                   client.get(f"/fhir/Patient?{encoded}")):
        assert answer.status_code == 200 and answer.json["total"] == total
