"""A later version of a resource recoded out of the value sets is read (docs/data-access.md): prefetch chooses the
relevant resources as it reads the body, so before, the earlier relevant version stayed read and its cards fired.

A chart of an aggressive T7 hemangioma with a cord compression (G95.20) gives the pre-operative cards; the
compression's later version recoded to back pain (ICD-10 M54.6) takes the compression off record, so the cards are
those of the chart without it. Every decode path of the body is covered (orjson below lazyjson.SMALLEST; Structs
below SAMPLED; entries read by their keys above it; and the whole Bundle decoded when most entries are kept), each
hook reading prefetch, both orders, the versions in one Bundle or in two keys."""
import datetime as dt

import pytest

import service.lazyjson
from service.clinical.record import build_record
from service.fhir.prefetch import PrefetchResolver
from tests.fhir_records import (COMPRESSION_ICD, bounds_duration, HEMANGIOMA_T7_AGGRESSIVE, ICD10CM, PATIENT_ID, SELECTOR, T7, concept,
                                condition, day, decompression, draft_dexamethasone, hook_request, patient, stay_on,
                                today, topics)

TODAY = dt.datetime.now(dt.timezone.utc).date()
_clock = stay_on(TODAY)
BACK_PAIN = (ICD10CM, "M54.6", "Pain in thoracic spine")
HOOKS = ("patient-view", "order-select", "order-sign", "encounter-discharge")


def _d(days: int) -> str:
    return day(days, since=today())


def _hemangioma() -> dict:
    return condition(HEMANGIOMA_T7_AGGRESSIVE, sites=[concept(*T7)], onset=_d(10), id="hem")


def _compression(version: str | None = "1", **meta) -> dict:
    res = condition(COMPRESSION_ICD, onset=_d(5), id="cmp")
    if version or meta:
        res["meta"] = {**({"versionId": version} if version else {}), **meta}
    return res


def _recoded(version: str | None = "2", **meta) -> dict:
    res = _compression(version, **meta)
    res["code"] = concept(*BACK_PAIN)
    return res


def _body(hook: str, conditions: list[dict], split: bool = False) -> dict:
    body = hook_request(hook, PATIENT_ID, [patient("1968-04-02"), *conditions],
                        [draft_dexamethasone(id="dex-draft", dosage=[bounds_duration(20)])], selections=["MedicationRequest/dex-draft"])
    if split:           # the later version in another key's Bundle (a client may send any resource under any key)
        entries = body["prefetch"]["conditions"]["entry"]
        moved = [e for e in entries if e["resource"]["id"] == "cmp"][-1]
        entries.remove(moved)
        body["prefetch"]["observations"]["entry"].insert(0, moved)
        body["prefetch"]["conditions"]["total"] -= 1
        body["prefetch"]["observations"]["total"] += 1
    return body


def _cards(client, hook: str, body: dict) -> list[dict]:
    response = client.post(f"/cds-services/avh-{hook}", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return response.json["cards"]


def _misshapen() -> dict:
    """An Observation of no value set whose coding is not an object: msgspec refuses the entries as Structs, so they
    are read by their keys."""
    return {"resourceType": "Observation", "id": "odd", "status": "final", "code": {"coding": ["not an object"]},
            "subject": {"reference": f"Patient/{PATIENT_ID}"}}


# How prefetch decodes the entries: (lazyjson.SMALLEST, lazyjson.SAMPLED patched to, an entry msgspec refuses as a
# Struct added): orjson below SMALLEST; Structs; by their keys; whole, when most of a sample of them is kept.
PATHS = {"orjson": (None, None, False), "structs": (0, None, False), "keys": (0, None, True), "whole": (0, 0, False)}


@pytest.fixture(params=list(PATHS))
def path(request, monkeypatch):
    smallest, sampled, misshapen = PATHS[request.param]
    if smallest is not None:
        monkeypatch.setattr(service.lazyjson, "SMALLEST", smallest)
    if sampled is not None:
        monkeypatch.setattr(service.lazyjson, "SAMPLED", sampled)
    return [_misshapen()] if misshapen else []


@pytest.mark.parametrize("split", [False, True], ids=["one-bundle", "two-keys"])
@pytest.mark.parametrize("order", ["earlier-first", "later-first"])
def test_a_later_version_recoded_out_of_the_value_sets_takes_the_earlier_off_record(client, path, order, split):
    _check_versions(client, "patient-view", path, order, split)


@pytest.mark.parametrize("order", ["earlier-first", "later-first"])
@pytest.mark.parametrize("hook", HOOKS[1:])
def test_every_hook_reading_prefetch_reads_the_later_version(client, hook, order):
    operated = [decompression(_d(2), "completed", id="op")] if hook == "encounter-discharge" else []
    _check_versions(client, hook, operated, order, False)


def _check_versions(client, hook: str, more: list[dict], order: str, split: bool) -> None:
    versions = [_compression("1"), _recoded("2")]
    if order == "later-first":
        versions.reverse()
    without = _cards(client, hook, _body(hook, [_hemangioma(), _recoded("2"), *more]))
    with_compression = _cards(client, hook, _body(hook, [_hemangioma(), _compression("1"), *more]))
    assert topics(with_compression) != topics(without)          # the compression changes the cards
    got = _cards(client, hook, _body(hook, [_hemangioma(), *versions, *more], split))
    assert topics(got) == topics(without), "the compression's earlier version was read over its later one"


def test_on_patient_view_the_recoded_compression_leaves_no_pre_operative_card(client):
    """The repro: the compression's two versions give 5 cards from version 1 before; with version 2 read there is no
    compression on record, so none of the cards a compression fires (pathway.md: a hemangioma alone is not
    pre-operative)."""
    for versions in ([_compression("1"), _recoded("2")], [_recoded("2"), _compression("1")]):
        cards = _cards(client, "patient-view", _body("patient-view", [_hemangioma(), *versions]))
        assert cards == _cards(client, "patient-view", _body("patient-view", [_hemangioma()]))


@pytest.mark.parametrize("earlier, later", [
    ({"versionId": "1"}, {"versionId": "2"}),
    ({"lastUpdated": "2026-01-01T00:00:00Z"}, {"lastUpdated": "2026-01-02T00:00:00Z"}),
])
def test_the_version_rule_decides_between_a_relevant_and_a_recoded_version(client, earlier, later):
    """The same rule as between two relevant versions: the later by versionId, else by lastUpdated; and a recoded
    earlier version leaves the relevant later one read."""
    relevant_later = [_recoded(None, **earlier), _compression(None, **later)]
    for versions in (relevant_later, relevant_later[::-1]):
        assert "surgical-decompression" in topics(_cards(client, "patient-view",
                                                         _body("patient-view", [_hemangioma(), *versions])))
    recoded_later = [_compression(None, **earlier), _recoded(None, **later)]
    for versions in (recoded_later, recoded_later[::-1]):
        assert "surgical-decompression" not in topics(_cards(client, "patient-view",
                                                             _body("patient-view", [_hemangioma(), *versions])))


@pytest.mark.parametrize("first_sent, kept", [("relevant", True), ("recoded", False)])
def test_without_a_version_the_first_sent_stays_whether_relevant_or_not(client, path, first_sent, kept):
    """Neither version tells (no meta): the first sent stays, as between two relevant versions (a history Bundle
    lists the newest first)."""
    versions = [_compression(None), _recoded(None)]
    if first_sent == "recoded":
        versions.reverse()
    cards = _cards(client, "patient-view", _body("patient-view", [_hemangioma(), *versions, *path]))
    assert ("surgical-decompression" in topics(cards)) is kept


def test_build_record_reads_the_later_version_recoded_out_of_the_value_sets():
    """build_record over every resource sent (not selected before): the same rule."""
    for versions in ([_compression("1"), _recoded("2")], [_recoded("2"), _compression("1")]):
        record = build_record([patient("1968-04-02"), _hemangioma(), *versions], SELECTOR, PATIENT_ID)
        assert [c.id for c in record.of("Condition")] == ["hem"]
    record = build_record([patient("1968-04-02"), _hemangioma(), _recoded("1"), _compression("2")], SELECTOR,
                          PATIENT_ID)
    assert [c.id for c in record.of("Condition")] == ["hem", "cmp"]


@pytest.fixture
def read_again(monkeypatch):
    """The calls that read what was sent again (PrefetchResolver._with_versions_passed_over), counted."""
    calls = []
    real = PrefetchResolver._with_versions_passed_over

    def counted(self, *args):
        calls.append(args)
        return real(self, *args)
    monkeypatch.setattr(PrefetchResolver, "_with_versions_passed_over", counted)
    return calls


def _heart_rate(id: str) -> dict:
    """An Observation of no value set (passed over as prefetch reads it)."""
    return {"resourceType": "Observation", "id": id, "status": "final", "effectiveDateTime": _d(1),
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}, "valueQuantity": {"value": 72},
            "subject": {"reference": f"Patient/{PATIENT_ID}"}}


def _said(cards: list[dict]) -> list[tuple]:
    """What cards say: their summaries, indicators and suggestions' labels (their uuids are new on every call)."""
    return [(card["summary"], card["indicator"], [s["label"] for s in card.get("suggestions", [])]) for card in cards]


def test_what_was_sent_is_read_again_only_when_an_id_is_shared(client, path, read_again):
    """Prefetch reads what was sent again only when a resource passed over shares its id with one kept: not on a
    call where none does (the usual one), and when the id is another type's (a false alarm), the cards are the
    same as without that resource."""
    alone = _said(_cards(client, "patient-view", _body("patient-view", [_hemangioma(), _compression("1"), *path])))
    unshared = [_heart_rate("hr"), _heart_rate("hr-2")]
    assert _said(_cards(client, "patient-view", _body("patient-view", [_hemangioma(), _compression("1"), *unshared,
                                                                       *path]))) == alone
    assert read_again == []
    for shared in ("hem", "cmp"):
        assert _said(_cards(client, "patient-view", _body("patient-view", [_hemangioma(), _heart_rate(shared),
                                                                           _compression("1"), *path]))) == alone
        assert len(read_again) == 1
        read_again.clear()


def test_a_bundle_with_an_entry_without_a_resource_still_reads_the_later_version(client, path):
    """An entry without a resource (FHIR allows it) among the versions: the ids are read past it."""
    body = _body("patient-view", [_hemangioma(), _compression("1"), _recoded("2"), *path])
    body["prefetch"]["conditions"]["entry"].insert(1, {"search": {"mode": "match"}})
    without = _cards(client, "patient-view", _body("patient-view", [_hemangioma(), _recoded("2"), *path]))
    assert topics(_cards(client, "patient-view", body)) == topics(without)
