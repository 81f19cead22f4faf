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
