"""mend18: what the readers of session 17's change found (tests of the behaviour fixes; the refactors keep the
suite's answers as they were)."""
import time

import pytest

from service import create_app
from service.config import Settings
from tests.fhir_records import UCUM, bounds_duration, day, dexamethasone, hook_request, in_pathway_chart, today
from tests.test_order_hooks import dex, post
from tests.test_security_limits import log_lines

__all__ = ["log_lines"]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = Settings.from_env({"AVH_CDS_AUTH": "off"}, sqlite_path=tmp_path_factory.mktemp("store") / "s.sqlite3")
    return create_app(settings).test_client()


# --- a dose stated in tablets and in mg reads alike at order time and in the chart --------------------------------

def tablets_then_mg(days: float, mg: float) -> dict:
    """A once-daily line whose doseAndRate states the dose twice, first as 2 tablets, then in mg."""
    return {**bounds_duration(days), "doseAndRate": [{"doseQuantity": {"value": 2, "unit": "TAB"}},
                                                     {"doseQuantity": {"value": mg, "unit": "mg", "system": UCUM,
                                                                       "code": "mg"}}]}


def steroid_duration(cards: list[dict]) -> list[dict]:
    return [c for c in cards if c["source"]["topic"]["code"] == "steroid-duration"]


@pytest.mark.parametrize("hook", ["order-sign", "order-select"])
def test_a_draft_dosed_in_tablets_then_mg_reads_its_mg_dose_as_the_chart_does(client, hook):
    """pathway.md section 4 reads the daily dose a dosage line states in structured form in mg, and section 5 reads a
    draft's with the same rule. A line of [2 tablets, 24 mg] states 24 mg: the chart read it so (the first mg dose of
    its doseAndRate), but a draft was read by its first doseAndRate only, 2 tablets, an unknown dose: its card said
    "daily dose not stated in mg", and a 20-day draft at [2 tablets, 8 mg], not a high dose, drew the card."""
    record = in_pathway_chart("p3")
    for mg, text in ((24, "up to 24 mg/day"), (8, None)):
        drafts = [dex("dex-1", tablets_then_mg(20, mg))]
        cards = steroid_duration(post(client, hook_request(hook, "p3", record, drafts, selections=(
            ["MedicationRequest/dex-1"] if hook == "order-select" else None))))
        if text is None:
            assert cards == [], (mg, cards)
        else:
            [card] = cards
            assert text in card["detail"] and "not stated" not in card["detail"], card["detail"]


def test_the_chart_reads_the_same_line_as_the_draft_does(client):
    """The same line on an ongoing order of the chart, 20 days into the course: patient-view names the same dose."""
    for mg, text in ((24, "up to 24 mg/day"), (8, None)):
        order = dexamethasone(day(20, since=today()), "active", patient_id="p3", id="dex-1",
                              dosage=[tablets_then_mg(30, mg)])
        answer = client.post("/cds-services/avh-patient-view",
                             json=hook_request("patient-view", "p3", in_pathway_chart("p3") + [order]))
        assert answer.status_code == 200, answer.json
        cards = steroid_duration(answer.json["cards"])
        if text is None:
            assert cards == [], (mg, cards)
        else:
            [card] = cards
            assert text in card["detail"] or text in card["summary"], card


# --- the issued-card writer: what it drops is logged, the rechecks it could not run are kept -----------------------

def test_rows_dropped_when_a_batch_not_written_goes_back_are_logged_by_the_writer(tmp_path, log_lines):
    """A batch the store did not take goes back to the head of the queue, trimmed to max_pending: the rows queued
    meanwhile pushed the oldest out silently (the warning was logged only when a hook call queued cards and found the
    queue over). The writer says how many it dropped, counts only."""
    import datetime as dt

    from service.feedback.store import FeedbackStore

    store = FeedbackStore(f"sqlite:///{tmp_path / 'd.sqlite3'}", flush_seconds=600, max_pending=3)
    store.start()
    now = dt.datetime.now(dt.timezone.utc)
    row = lambda i: (f"card-{i}", "svc", "topic", "hook-1", now)      # noqa: E731 (ISSUED_COLUMNS)
    store._pending.extend(row(i) for i in range(3))

    def unavailable(rows, suggestions=()):
        store._pending.extend(row(i) for i in range(3, 5))       # queued by calls while the batch was out
        return False
    store._write_issued = unavailable
    try:
        assert store.flush_issued() is False
        assert [r[0] for r in store._pending] == ["card-2", "card-3", "card-4"]
        assert "2 issued cards not recorded: over 3 waiting for the feedback store" in log_lines()
        assert "card-0" not in log_lines() and "hook-1" not in log_lines()
    finally:
        store.dispose()


def test_due_rechecks_are_kept_when_the_writer_fails_running_them(tmp_path, log_lines):
    """A recheck due is taken off the list before it runs: an error not the database's (which _write turns into
    StorageUnavailable) lost it and the due ones after it, and feedback on a card written later stayed unknown. They
    are kept for the writer's next round."""
    from service.feedback.store import FeedbackStore

    store = FeedbackStore(f"sqlite:///{tmp_path / 'r.sqlite3'}", flush_seconds=600)
    store.start()
    due = [(0.0, "svc", ("card-1",)), (0.0, "svc", ("card-2",))]
    later = (time.monotonic() + 3600, "svc", ("card-3",))
    store._rechecks = [*due, later]
    real, runs = store._write, []

    def broken(work, durable=True):
        runs.append(work)
        raise RuntimeError("not the database's")
    store._write = broken
    try:
        with pytest.raises(RuntimeError):
            store._run_due_rechecks()
        assert len(runs) == 1
        assert sorted(store._rechecks) == sorted([*due, later])
        store._write = real
        store._run_due_rechecks()                     # the next round runs them (no feedback to mark: no error)
        assert store._rechecks == [later]
    finally:
        store._write = real
        store.dispose()


# --- deceased: one rule (record.says_deceased), read on the JSON of a Patient left out and on the Patient read ------

@pytest.mark.parametrize("sent", [True, "true", 1])
def test_a_patient_fhir_resources_reads_as_deceased_gets_no_card(client, sent):
    """Why is_deceased reads the Patient read (getattr) and not only its JSON (dict.get), though the rule is one: a
    Patient the R4 schema refuses is judged by fhir.resources, which reads deceasedBoolean "true" or 1 as true and
    accepts it. Read on the JSON alone, `"true"` is not true: this patient would get the pathway's cards."""
    from tests.fhir_records import patient

    record = [patient("1970-05-01", "p3", deceasedBoolean=sent), *in_pathway_chart("p3")[1:]]
    answer = client.post("/cds-services/avh-patient-view", json=hook_request("patient-view", "p3", record))
    assert answer.status_code == 200 and answer.json["cards"] == [], answer.json
    alive = [patient("1970-05-01", "p3"), *in_pathway_chart("p3")[1:]]
    assert client.post("/cds-services/avh-patient-view", json=hook_request("patient-view", "p3", alive)).json["cards"]


@pytest.mark.parametrize("sent", ["true", 1, "yes"])
def test_a_patient_left_out_whose_deceased_flag_fhir_resources_reads_as_true_gets_no_card(client, sent):
    """The same rule on the JSON of a Patient left out as invalid (another element: a birthDate that is no date):
    its deceasedBoolean was deceased only when JSON's true, so `"true"`, which makes a valid Patient deceased (the
    test above), left this one alive, and it got the pathway's five cards, 'urgent decompression' among them. Now a
    flag fhir.resources reads as true is deceased on both shapes; one it reads as false, or cannot read, is not."""
    from tests.fhir_records import patient

    def cards(**extra):
        record = [patient("garbage", "p3", **extra), *in_pathway_chart("p3")[1:]]
        answer = client.post("/cds-services/avh-patient-view", json=hook_request("patient-view", "p3", record))
        assert answer.status_code == 200, answer.json
        return answer.json["cards"]

    assert cards(deceasedBoolean=sent) == []
    for alive in ("false", 0, "maybe", [], {}):
        assert cards(deceasedBoolean=alive), alive
