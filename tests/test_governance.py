"""GET /governance on SQLite and the real PostgreSQL: the numbers of the page, the JSON and the CSV equal numbers
counted here, in Python, from the rows seeded (bench/governance_data.py); filters, the credential, the migration
of an existing database, accepted suggestions recorded through real hook calls, and the Prometheus counter."""
import base64
import csv
import datetime as dt
import io
import json
import logging
import re
from collections import Counter, defaultdict

import pytest
from sqlalchemy import (JSON, Boolean, Column, DateTime, Index, Integer, MetaData, String, Table, Text, create_engine, insert,
                        inspect, select)

from bench.governance_data import generate, load
from service import cli, create_app
from service.config import Settings
from service.feedback.store import schema_version
from service.ops.metrics import feedback_labels
from tests.fhir_records import CPT, NO_AUTH, bounds_duration, draft_dexamethasone, draft_order, hook_request, in_pathway_chart
from tests.test_feedback import _empty

TODAY = dt.datetime.now(dt.timezone.utc).date()
TOKEN = "gov-secret-7f3a9c1e"


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path):
    if request.param == "sqlite":
        return {"sqlite_path": tmp_path / "governance.sqlite3"}
    return {"database_url": _empty(request.getfixturevalue("postgres_url"))}


def make_app(storage, **settings):
    environ = {**NO_AUTH, **settings.pop("environ", {})}
    return create_app(Settings.from_env(environ, issued_flush_seconds=0, governance_min_feedback=5, **storage, **settings))


@pytest.fixture(scope="module")
def seed():
    """Three months of cards, a fifth of them answered, some twice, some feedback on cards never issued."""
    return generate(cards=2500, entries=600, today=TODAY, days=90, seed=5, unknown_share=0.03, repeat_share=0.1)


@pytest.fixture
def seeded(storage, seed):
    app = make_app(storage)
    load(app.extensions["avh"].store, seed)
    yield app
    app.extensions["avh"].store.dispose()


def day(moment):
    return moment.astimezone(dt.timezone.utc).date()


def expected(seed, start, end, service=None, today=None, threshold=0.5, min_entries=5):
    """The page's numbers, counted from the seeded rows without SQL. The alert-fatigue window ends on the day the
    service judges now by, taken at this call, not at import: a suite run across midnight UTC had them differ."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    cards = {c[0]: c for c in seed.issued if service in (None, c[1])}
    entries_of = defaultdict(list)
    for f in seed.feedback:
        if f[3] and f[2] in cards:
            entries_of[f[2]].append(f)

    def counts(selected):
        accepted = sum(1 for c in selected for f in entries_of[c[0]] if f[4] == "accepted")
        overridden = sum(1 for c in selected for f in entries_of[c[0]] if f[4] == "overridden")
        with_feedback = sum(1 for c in selected if entries_of[c[0]])
        return {"issued": len(selected), "cardsWithFeedback": with_feedback, "noFeedback": len(selected) - with_feedback,
                "feedbackEntries": accepted + overridden, "accepted": accepted, "overridden": overridden}
    in_period = [c for c in cards.values() if start <= day(c[4]) <= end]
    by_topic, by_service, by_week = defaultdict(list), defaultdict(list), defaultdict(list)
    for c in in_period:
        by_topic[c[2]].append(c)
        by_service[c[1]].append(c)
        by_week[(day(c[4]) - dt.timedelta(days=day(c[4]).weekday()), c[2])].append(c)
    window = defaultdict(list)
    for c in cards.values():
        if today - dt.timedelta(days=29) <= day(c[4]) <= today:
            window[c[2]].append(c)
    fatigue = {}
    for topic, selected in window.items():
        n = counts(selected)
        fatigue[topic] = {**n, "flagged": n["feedbackEntries"] >= min_entries and n["overridden"] > threshold * n["feedbackEntries"]}
    reasons, taken = Counter(), Counter()
    label = {s[0]: s[2] for s in seed.suggested}
    for c in in_period:
        for f in entries_of[c[0]]:
            if f[4] == "overridden":
                reasons[(c[2], f[8])] += 1
            else:
                names = sorted(label[u] for u in json.loads(f[6]) if u in label)
                taken[(c[2], " + ".join(names) or None)] += 1
    unknown = Counter(f[4] for f in seed.feedback if not f[3] and start <= day(f[5]) <= end and service in (None, f[1]))
    return {"total": counts(in_period), "byTopic": {t: counts(s) for t, s in by_topic.items()},
            "byService": {s: counts(c) for s, c in by_service.items()},
            "weekly": {(w.isoformat(), t): counts(c) for (w, t), c in by_week.items()},
            "fatigue": fatigue, "reasons": dict(reasons), "suggestions": dict(taken),
            "unknown": {"accepted": unknown["accepted"], "overridden": unknown["overridden"]}}


COUNT_KEYS = ("issued", "cardsWithFeedback", "noFeedback", "feedbackEntries", "accepted", "overridden")


def just_counts(row):
    return {k: row[k] for k in COUNT_KEYS}


def assert_report_matches(data, want):
    assert just_counts(data["total"]) == want["total"]
    assert {r["topic"]: just_counts(r) for r in data["byTopic"]} == want["byTopic"]
    assert {r["service"]: just_counts(r) for r in data["byService"]} == want["byService"]
    assert {(r["week"], r["topic"]): just_counts(r) for r in data["weekly"]} == want["weekly"]
    assert {f["topic"]: {**just_counts(f), "flagged": f["flagged"]} for f in data["alertFatigue"]["topics"]} == want["fatigue"]
    assert {(r["topic"], r["code"]): r["count"] for r in data["overrideReasons"]} == want["reasons"]
    assert {(r["topic"], r["suggestion"]): r["count"] for r in data["acceptedSuggestions"]} == want["suggestions"]
    assert {k: data["unknownCards"][k] for k in ("accepted", "overridden")} == want["unknown"]
    for row in data["byTopic"]:
        assert row["overrideRate"] == {"value": round(row["overridden"] / row["feedbackEntries"], 4) if row["feedbackEntries"] else None,
                                       "part": row["overridden"], "of": row["feedbackEntries"]}


def test_the_json_numbers_equal_the_rows_counted_here(seeded, seed):
    client = seeded.test_client()
    start, end = TODAY - dt.timedelta(days=59), TODAY
    data = client.get(f"/governance?format=json&from={start}&to={end}").json
    assert data["period"] == {"from": start.isoformat(), "to": end.isoformat(), "service": None}
    want = expected(seed, start, end)
    assert want["total"]["issued"] > 1000 and want["total"]["accepted"] and want["unknown"]["overridden"]
    assert any(f["flagged"] for f in want["fatigue"].values()) and not all(f["flagged"] for f in want["fatigue"].values())
    assert any(name is not None for _, name in want["suggestions"])
    assert_report_matches(data, want)
    # One service, a shorter period: other numbers, still the ones counted here.
    narrow = client.get(f"/governance?format=json&from={TODAY - dt.timedelta(days=20)}&to={TODAY - dt.timedelta(days=3)}"
                        "&service=avh-order-sign").json
    want_narrow = expected(seed, TODAY - dt.timedelta(days=20), TODAY - dt.timedelta(days=3), "avh-order-sign")
    assert want_narrow["total"]["issued"] < want["total"]["issued"]
    assert_report_matches(narrow, want_narrow)
    assert {r["service"] for r in narrow["byService"]} == {"avh-order-sign"}


def test_the_csv_and_the_page_carry_the_same_numbers(seeded, seed):
    client = seeded.test_client()
    start, end = TODAY - dt.timedelta(days=89), TODAY
    want = expected(seed, start, end)
    response = client.get(f"/governance?format=csv&from={start}&to={end}")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    topics = {r["topic"]: r for r in rows if r["section"] == "topic"}
    assert {t: (int(r["issued"]), int(r["accepted"]), int(r["overridden"]), int(r["no_feedback"])) for t, r in topics.items()} == \
        {t: (c["issued"], c["accepted"], c["overridden"], c["noFeedback"]) for t, c in want["byTopic"].items()}
    assert {(r["topic"], r["item"]): int(r["count"]) for r in rows if r["section"] == "override_reason"} == \
        {(t, code or ""): n for (t, code), n in want["reasons"].items()}
    page = client.get(f"/governance?from={start}&to={end}")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert re.search(r'id="total-issued">([\d,]+)<', html).group(1).replace(",", "") == str(want["total"]["issued"])
    table = re.search(r'<table id="topics-table">(.*?)</table>', html, re.S).group(1)
    for topic, c in want["byTopic"].items():
        row = re.search(rf'<tr data-topic="{topic}">(.*?)</tr>', table, re.S).group(1)
        assert [int(n.replace(",", "")) for n in re.findall(r'<td class="n">([\d,]+)</td>', row)] == \
            [c["issued"], c["cardsWithFeedback"], c["noFeedback"], c["accepted"], c["overridden"]]
    assert html.count("<svg") == 3
    assert "https://" not in re.sub(r'xmlns(:\w+)?="[^"]*"|http://www\.w3\.org[^"]*', "", html).replace(
        "https://avh-cds.org", "")       # nothing loaded from elsewhere
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")


@pytest.mark.parametrize("query, parameter", [
    ("from=2026-02-30", "from"), ("from=yesterday", "from"), ("to=2026-1-5", "to"), ("from=1900-01-01", "from"),
    ("to=9999-12-31", "to"), ("from=2026-11-10&to=2026-11-01", "from"), ("from=2020-01-01&to=2026-01-01", "from"),
    ("service=nope", "service"), ("format=xml", "format"), ("servce=avh-order-sign", "servce"),
    ("service=avh-order-sign&service=avh-order-select", "service"), ("from=%00", "from"),
])
def test_a_bad_filter_is_a_specific_400(client, query, parameter):
    response = client.get(f"/governance?{query}")
    assert response.status_code == 400 and response.is_json
    assert response.json["error"] == "invalid_filter" and response.json["parameter"] == parameter
    assert response.json["message"].startswith(f"{parameter}: ")


def test_the_credential_missing_wrong_and_right(storage, caplog):
    app = make_app(storage, environ={"AVH_CDS_AUTH": "required"}, governance_token=TOKEN)
    client = app.test_client()
    caplog.set_level(logging.INFO, logger="service.access")
    missing = client.get("/governance?format=json")
    assert missing.status_code == 401 and missing.json["error"] == "unauthorized"
    assert missing.headers.getlist("WWW-Authenticate") == ['Bearer realm="avh-cds governance"',
                                                           'Basic realm="avh-cds governance", charset="UTF-8"']
    for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ", "Basic !!!", "Token " + TOKEN,
                  "Basic " + __import__("base64").b64encode(b"committee:nope").decode()):
        assert client.get("/governance", headers={"Authorization": wrong}).status_code == 401
    right = client.get("/governance?format=json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200 and "comments" in right.json
    basic = __import__("base64").b64encode(f"committee:{TOKEN}".encode()).decode()
    assert client.get("/governance", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "governance"]
    assert [r.fields["status"] for r in lines][:2] == [401, 401] and lines[-1].fields["status"] == 200
    assert lines[-1].fields["viewer"] == "token" and "ms" in lines[-1].fields
    assert TOKEN not in caplog.text and basic not in caplog.text
    app.extensions["avh"].store.dispose()
    # Auth required and no token configured: closed to everyone.
    closed = make_app(storage, environ={"AVH_CDS_AUTH": "required"})
    assert closed.test_client().get("/governance").status_code == 401
    assert closed.test_client().get("/governance", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
    closed.extensions["avh"].store.dispose()


MALFORMED = [("Bearer ", "Bearer with no token"), ("Basic !!!", "not base64"),
             ("Basic " + base64.b64encode(b"committee").decode(), "not user:password"),
             ("Basic " + base64.b64encode(b"committee:").decode(), "no password"),
             ("Token " + TOKEN, "neither Bearer nor Basic"), (TOKEN, "neither Bearer nor Basic")]


@pytest.mark.parametrize("auth", ["off", "required"])
@pytest.mark.parametrize("authorization, problem", MALFORMED)
def test_a_malformed_credential_is_a_401_naming_the_problem_whatever_the_auth_mode(tmp_path, auth, authorization, problem):
    """ui14: with AVH_CDS_AUTH=off, an Authorization header that is no Bearer token nor Basic user:password was taken
    for no header: the page opened without the comments the viewer meant to unlock, and nothing said the credential
    was not read (a well-formed wrong one was already a 401). The governance credential is read whatever
    AVH_CDS_AUTH says (the CDS routes, with auth off, read no Authorization at all: test below), so a malformed
    one is refused like a wrong one, with what is wrong in it; with auth required the 401 said none was sent."""
    app = make_app({"sqlite_path": tmp_path / "malformed.sqlite3"}, environ={"AVH_CDS_AUTH": auth},
                   governance_token=TOKEN)
    refused = app.test_client().get("/governance?format=json", headers={"Authorization": authorization})
    assert refused.status_code == 401 and refused.json["error"] == "malformed_credential"
    assert problem in refused.json["message"] and TOKEN not in refused.get_data(as_text=True)
    assert len(refused.headers.getlist("WWW-Authenticate")) == 2      # a browser asks for the password again
    if auth == "off":
        blank = app.test_client().get("/governance?format=json", headers={"Authorization": "  "})
        assert blank.status_code == 200 and "comments" not in blank.json   # a blank header is no credential
    app.extensions["avh"].store.dispose()


def test_with_auth_off_the_cds_routes_read_no_authorization_at_all(tmp_path):
    """What the governance page is consistent with: auth off, a CDS call's Authorization, malformed or not, is not
    read (docs/security.md); the governance credential is the only one read then."""
    app = make_app({"sqlite_path": tmp_path / "off.sqlite3"})
    client = app.test_client()
    for authorization, _ in MALFORMED:
        assert client.get("/cds-services", headers={"Authorization": authorization}).status_code == 200
    app.extensions["avh"].store.dispose()


def test_wrong_credentials_from_an_address_are_limited_per_minute(tmp_path, caplog):
    from service.security.governance import WRONG_TRIES_PER_MINUTE, WrongTries
    app = make_app({"sqlite_path": tmp_path / "limit.sqlite3"}, environ={"AVH_CDS_AUTH": "required"},
                   governance_token=TOKEN)
    now = [1000.0]
    app.extensions["avh_governance_tries"] = WrongTries(clock=lambda: now[0])
    client = app.test_client()
    caplog.set_level(logging.INFO)
    guesser, colleague = {"REMOTE_ADDR": "192.0.2.7"}, {"REMOTE_ADDR": "192.0.2.8"}
    for n in range(WRONG_TRIES_PER_MINUTE):
        now[0] += 1
        assert client.get("/governance", headers={"Authorization": f"Bearer guess-{n}"}, environ_base=guesser).status_code == 401
    for authorization in ("Bearer guess-again", f"Bearer {TOKEN}"):     # the right one too: no oracle for a guesser
        refused = client.get("/governance", headers={"Authorization": authorization}, environ_base=guesser)
        assert refused.status_code == 429 and refused.json["error"] == "too_many_attempts"
        assert refused.headers["Retry-After"] == "51" and refused.json["retryAfterSeconds"] == 51
    # Another address is not held up; no credential sent is the usual 401, not counted.
    assert client.get("/governance", headers={"Authorization": f"Bearer {TOKEN}"}, environ_base=colleague).status_code == 200
    assert client.get("/governance", environ_base=guesser).status_code == 401
    now[0] += 51                                 # the oldest wrong try is a minute old: one more try is allowed
    assert client.get("/governance", headers={"Authorization": f"Bearer {TOKEN}"}, environ_base=guesser).status_code == 200
    assert "guess-" not in caplog.text and TOKEN not in caplog.text
    app.extensions["avh"].store.dispose()


@pytest.mark.parametrize("hops, forwarded", [(1, "{client}"), (1, "203.0.113.9, {client}"),
                                             (2, "{client}, 10.0.0.2")])
def test_behind_trusted_proxies_wrong_tries_count_by_the_client_address(tmp_path, hops, forwarded):
    """Attack (hard13; issue 17's leftover): behind the compose nginx every client had the proxy's address, so ten
    wrong credentials a minute from one guesser held up the committee's right credential too. With
    AVH_CDS_TRUSTED_PROXY_HOPS the limit counts by the address the first trusted proxy saw (what a client wrote to
    the left of it is its own say: a guesser cannot pass for another address by writing one)."""
    from service.security.governance import WRONG_TRIES_PER_MINUTE
    app = make_app({"sqlite_path": tmp_path / "hops.sqlite3"}, environ={"AVH_CDS_AUTH": "required"},
                   governance_token=TOKEN, trusted_proxy_hops=hops)
    client, proxy = app.test_client(), {"REMOTE_ADDR": "172.18.0.5"}

    def via_proxy(client_address: str, authorization: str):
        return client.get("/governance", headers={"Authorization": authorization,
                                                  "X-Forwarded-For": forwarded.format(client=client_address)},
                          environ_base=proxy)
    for n in range(WRONG_TRIES_PER_MINUTE):
        assert via_proxy("192.0.2.7", f"Bearer guess-{n}").status_code == 401
    assert via_proxy("192.0.2.7", f"Bearer {TOKEN}").status_code == 429
    assert via_proxy("192.0.2.8", f"Bearer {TOKEN}").status_code == 200
    app.extensions["avh"].store.dispose()


def test_without_trusted_proxies_x_forwarded_for_is_not_read(tmp_path):
    """AVH_CDS_TRUSTED_PROXY_HOPS unset (0): a client writing X-Forwarded-For does not escape the limit."""
    from service.security.governance import WRONG_TRIES_PER_MINUTE
    app = make_app({"sqlite_path": tmp_path / "nohops.sqlite3"}, environ={"AVH_CDS_AUTH": "required"},
                   governance_token=TOKEN)
    client = app.test_client()
    for n in range(WRONG_TRIES_PER_MINUTE + 1):
        answer = client.get("/governance", headers={"Authorization": f"Bearer guess-{n}", "X-Forwarded-For": f"192.0.2.{n}"},
                            environ_base={"REMOTE_ADDR": "192.0.2.200"})
    assert answer.status_code == 429
    app.extensions["avh"].store.dispose()


def test_comments_only_to_a_viewer_with_the_credential_and_truncated(storage, seed):
    app = make_app(storage, governance_token=TOKEN)         # auth off: open, but comments need the token
    load(app.extensions["avh"].store, seed)
    client = app.test_client()
    anonymous = client.get("/governance?format=json")
    assert anonymous.status_code == 200 and "comments" not in anonymous.json
    assert "Discussed at the spine board" not in client.get("/governance").get_data(as_text=True)
    shown = client.get("/governance?format=json", headers={"Authorization": f"Bearer {TOKEN}"}).json["comments"]
    assert shown and all(len(c["comment"]) <= 201 for c in shown)
    assert any(c["truncated"] and c["comment"].endswith("…") for c in shown)       # the long comment, cut
    assert max(Counter(c["topic"] for c in shown).values()) <= 10
    page = client.get("/governance", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True)
    assert "Discussed at the spine board" in page
    app.extensions["avh"].store.dispose()


def _issue_order_sign(client, pid):
    drafts = [draft_order(CPT, "63046", "Laminectomy", patient_id=pid, id="surg-1"),
              draft_dexamethasone([bounds_duration(20)], patient_id=pid, id="dex-1")]
    body = client.post("/cds-services/avh-order-sign", json=hook_request("order-sign", pid, in_pathway_chart(pid), drafts)).json
    return {c["source"]["topic"]["code"]: c for c in body["cards"]}


def _accept(client, card, suggestion, service="avh-order-sign"):
    entry = {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": dt.datetime.now(dt.timezone.utc).isoformat(),
             "acceptedSuggestions": [{"id": suggestion["uuid"]}]}
    return client.post(f"/cds-services/{service}/feedback", json={"feedback": [entry]})


def test_which_suggestion_was_taken_is_recorded_through_real_calls(storage):
    app = make_app(storage)
    client = app.test_client()
    first, second = _issue_order_sign(client, "p1"), _issue_order_sign(client, "p2")
    labels = [s["label"] for s in first["posterior-fixation"]["suggestions"]]
    assert len(labels) == 2
    assert _accept(client, first["posterior-fixation"], first["posterior-fixation"]["suggestions"][0]).status_code == 200
    assert _accept(client, second["posterior-fixation"], second["posterior-fixation"]["suggestions"][1]).status_code == 200
    assert _accept(client, second["steroid-duration"], second["steroid-duration"]["suggestions"][0]).status_code == 200
    # patient-view, twice for one chart: the second answer comes from the remembered template, with new uuids.
    body = hook_request("patient-view", "p3", in_pathway_chart("p3"))
    views = [client.post("/cds-services/avh-patient-view", json=body).json["cards"] for _ in range(2)]
    steroids = [next(c for c in cards if c["source"]["topic"]["code"] == "corticosteroids") for cards in views]
    assert steroids[0]["suggestions"][1]["uuid"] != steroids[1]["suggestions"][1]["uuid"]
    assert steroids[1]["suggestions"][1]["label"].startswith("Dexamethasone 16 mg")
    assert _accept(client, steroids[1], steroids[1]["suggestions"][1], "avh-patient-view").status_code == 200
    data = client.get("/governance?format=json").json
    taken = {(r["topic"], r["suggestion"]): (r["count"], r["label"]) for r in data["acceptedSuggestions"]}
    assert taken == {("posterior-fixation", "add-fixation-to-draft"): (1, labels[0]),
                     ("posterior-fixation", "order-posterior-fixation"): (1, labels[1]),
                     ("steroid-duration", "shorten-course"): (1, second["steroid-duration"]["suggestions"][0]["label"]),
                     ("corticosteroids", "dexamethasone-moderate-dose"): (1, steroids[1]["suggestions"][1]["label"])}
    app.extensions["avh"].store.dispose()


def test_an_accepted_entry_naming_none_of_the_cards_suggestions_is_not_called_unrecorded(storage):
    """A card issued today (its suggestions recorded) accepted with a suggestion id it never had: the page told the
    committee "suggestion not recorded", which it explains as a card from before avh-cds recorded suggestions."""
    app = make_app(storage)
    client = app.test_client()
    card = _issue_order_sign(client, "p1")["steroid-duration"]
    assert _accept(client, card, {"uuid": "not-one-of-its-suggestions"}).status_code == 200
    [row] = client.get("/governance?format=json").json["acceptedSuggestions"]
    assert row["suggestion"] is None and row["count"] == 1
    assert row["label"] == "(no suggestion of the card named)"
    page = client.get("/governance").get_data(as_text=True)
    assert "suggestion not recorded" not in page.lower() and "(no suggestion of the card named)" in page
    app.extensions["avh"].store.dispose()


def version_1_tables():
    """The schema as version 1 created it (before the governance report), written out as it was."""
    old = MetaData()
    Table("avh_schema_version", old, Column("version", Integer, primary_key=True))
    cards = Table("avh_issued_card", old, Column("card_uuid", String(64), primary_key=True),
                  Column("service_id", String(100), nullable=False), Column("topic", String(100), nullable=False),
                  Column("hook_instance", String(100), nullable=False),
                  Column("issued_at", DateTime(timezone=True), nullable=False), Index("ix_avh_issued_card_topic", "topic"))
    entries = Table("avh_feedback", old, Column("id", Integer, primary_key=True, autoincrement=True),
                    Column("idempotency_key", String(64), nullable=False, unique=True),
                    Column("service_id", String(100), nullable=False), Column("card_uuid", Text, nullable=False),
                    Column("card_known", Boolean, nullable=False), Column("outcome", String(20), nullable=False),
                    Column("outcome_at", DateTime(timezone=True), nullable=False),
                    Column("accepted_suggestions", JSON, nullable=False), Column("override_system", Text),
                    Column("override_code", Text), Column("override_display", Text), Column("user_comment", Text),
                    Column("received_at", DateTime(timezone=True), nullable=False), Index("ix_avh_feedback_card", "card_uuid"))
    return old, cards, entries


def test_an_existing_version_1_database_is_migrated_and_its_old_cards_still_count(storage):
    from service.feedback.store import MIGRATIONS, database_url
    from pathlib import Path
    url = database_url(storage.get("database_url", ""), storage.get("sqlite_path", Path()))
    engine = create_engine(url)
    when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    old, cards, entries = version_1_tables()
    with engine.begin() as conn:                     # a database as schema version 1 left it, with data
        old.create_all(conn)
        conn.execute(insert(old.tables["avh_schema_version"]).values(version=1))
        conn.execute(insert(cards).values(card_uuid="c-old", service_id="avh-order-sign", topic="steroid-duration",
                                          hook_instance="h", issued_at=when))
        conn.execute(insert(entries).values(idempotency_key="k-old", service_id="avh-order-sign", card_uuid="c-old",
                                            card_known=True, outcome="accepted", outcome_at=when,
                                            accepted_suggestions=["s-old"], received_at=when))
    assert "avh_issued_suggestion" not in inspect(engine).get_table_names()
    engine.dispose()
    app = make_app(storage)
    engine = create_engine(url)
    assert "avh_issued_suggestion" in inspect(engine).get_table_names()
    indexes = {i["name"] for t in ("avh_issued_card", "avh_feedback") for i in inspect(engine).get_indexes(t)}
    assert {"ix_avh_feedback_card_issued_at", "ix_avh_feedback_outcome_at", "ix_avh_feedback_report_reasons"} <= indexes
    assert "ix_avh_issued_card_report" not in indexes      # version 2's, dropped by version 3 (the rollup counts cards)
    with engine.connect() as conn:
        assert conn.execute(select(schema_version.c.version)).scalars().all() == list(range(1, len(MIGRATIONS) + 1))
    engine.dispose()
    data = app.test_client().get("/governance?format=json").json
    assert [just_counts(r) for r in data["byTopic"]] == [{"issued": 1, "cardsWithFeedback": 1, "noFeedback": 0,
                                                          "feedbackEntries": 1, "accepted": 1, "overridden": 0}]
    assert data["acceptedSuggestions"] == [{"topic": "steroid-duration", "suggestion": None, "count": 1,
                                            "label": "(no suggestion of the card named)"}]
    # A row written into the migrated table by something other than the service (an import, SQL by hand) lacks
    # the card's copied topic and time: the report fills them in and counts it.
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(entries).values(idempotency_key="k-by-hand", service_id="avh-order-sign", card_uuid="c-old",
                                            card_known=True, outcome="overridden", outcome_at=when,
                                            accepted_suggestions=[], override_code="not-applicable", received_at=when))
    engine.dispose()
    data = app.test_client().get("/governance?format=json").json
    assert (data["byTopic"][0]["accepted"], data["byTopic"][0]["overridden"], data["byTopic"][0]["cardsWithFeedback"]) == (1, 1, 1)
    assert [(r["code"], r["count"]) for r in data["overrideReasons"]] == [("not-applicable", 1)]
    app.extensions["avh"].store.dispose()


def _outcome_count(client, topic, outcome):
    match = re.search(rf'avh_cds_feedback_outcomes_total{{outcome="{outcome}",topic="{topic}"}} ([\d.]+)',
                      client.get("/metrics").get_data(as_text=True))
    return float(match.group(1)) if match else 0.0


def test_feedback_outcomes_are_counted_in_prometheus_once_with_bounded_labels(storage):
    app = make_app(storage)
    client = app.test_client()
    cards = _issue_order_sign(client, "p1")
    before = {k: _outcome_count(client, *k) for k in (("posterior-fixation", "accepted"), ("unknown_card", "overridden"))}
    accepted = _accept(client, cards["posterior-fixation"], cards["posterior-fixation"]["suggestions"][0])
    assert accepted.json["stored"] == 1
    resent = client.post("/cds-services/avh-order-sign/feedback", json={"feedback": [
        {"card": cards["posterior-fixation"]["uuid"], "outcome": "accepted", "acceptedSuggestions": [
            {"id": cards["posterior-fixation"]["suggestions"][0]["uuid"]}],
         "outcomeTimestamp": "2026-01-01T00:00:00Z"},
        {"card": "never-issued", "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]})
    assert resent.json["stored"] == 2
    client.post("/cds-services/avh-order-sign/feedback", json={"feedback": [       # the same again: not counted again
        {"card": "never-issued", "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]})
    assert _outcome_count(client, "posterior-fixation", "accepted") == before[("posterior-fixation", "accepted")] + 2
    assert _outcome_count(client, "unknown_card", "overridden") == before[("unknown_card", "overridden")] + 1
    topics = app.extensions["avh"].engine.library.topics
    assert feedback_labels("a-topic-someone-made-up", "accepted", topics) == ("other", "accepted")
    assert feedback_labels("spine-mri", "ignored", topics) == ("spine-mri", "other")
    assert feedback_labels("data-unavailable", "overridden", topics) == ("data-unavailable", "overridden")
    app.extensions["avh"].store.dispose()


def test_feedback_report_html_writes_the_same_page_offline(seeded, seed, storage, monkeypatch, tmp_path, capsys):
    for key, value in storage.items():
        monkeypatch.setenv(f"AVH_CDS_{key.upper()}", str(value))
    monkeypatch.setenv("AVH_CDS_GOVERNANCE_MIN_FEEDBACK", "5")         # as the served app (make_app)
    start, end = TODAY - dt.timedelta(days=40), TODAY - dt.timedelta(days=10)
    out = tmp_path / "governance.html"
    assert cli.main(["feedback-report", "--html", str(out), "--from", str(start), "--to", str(end),
                     "--service", "avh-patient-view"]) == 0
    html = out.read_text()
    want = expected(seed, start, end, "avh-patient-view")
    assert re.search(r'id="total-issued">([\d,]+)<', html).group(1).replace(",", "") == str(want["total"]["issued"])
    assert html.count("<svg") == 3 and "<form" not in html and "Discussed at the spine board" not in html
    served = seeded.test_client().get(f"/governance?from={start}&to={end}&service=avh-patient-view").get_data(as_text=True)
    strip = lambda page: re.sub(r"\s+", " ", re.sub(r"Generated [^<]*|<form.*?</form>|<span>Export:.*?</span>", "", page,  # noqa: E731
                                                    flags=re.S))
    assert strip(html).split("<h2 id=\"comments\">")[0] == strip(served).split("<h2 id=\"comments\">")[0]
    assert cli.main(["feedback-report", "--html", str(out), "--from", "2026-02-30"]) == 2
    assert "from: '2026-02-30' is not a calendar date" in capsys.readouterr().err


def test_feedback_report_refuses_filters_it_would_ignore_and_an_unwritable_file(monkeypatch, tmp_path, capsys):
    """`feedback-report --from 2026-01-01` printed the all-time table as if filtered (the filters go with --html
    only), and `--html` into a directory that does not exist was a traceback."""
    monkeypatch.setenv("AVH_CDS_SQLITE_PATH", str(tmp_path / "avh-cds.sqlite3"))
    for flags in (["--from", "2026-01-01"], ["--to", "2026-01-01"], ["--service", "avh-order-sign"], ["--with-comments"],
                  ["--json", "--from", "2026-01-01"]):
        assert cli.main(["feedback-report", *flags]) == 2
        err = capsys.readouterr().err
        assert f"{flags[-2] if flags[-1][0] != '-' else flags[-1]} goes with --html" in err, err
    missing = tmp_path / "no" / "such" / "dir" / "governance.html"
    assert cli.main(["feedback-report", "--html", str(missing)]) == 2
    assert f"avh-cds feedback-report: cannot write {missing}" in capsys.readouterr().err
    assert cli.main(["feedback-report"]) == 0
