"""Hostile review of the lazy request decoder (service/lazyjson.py): bodies on which it once answered otherwise than
orjson.loads did. Each test posts the body and compares the answer with the one the app gives when the body is
decoded by orjson, whole (main's decoder), or states the answer orjson's path gives."""
from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
import uuid

import orjson
import pytest

import service.jsonbody
import service.lazyjson
from service import create_app
from service.config import Settings
from service.errors import ApiError
from service.fhir.prefetch import PrefetchResolver, read_resources
from service.lazyjson import decode
from service.security.limits import check_limits
from tests.deployment_support import without_uuids
from tests.fhir_records import pre_operative_chart, searchset
from tests.test_lazyjson import SELECTOR, TEMPLATES

PATIENT = "p1"
INVOKE = "/cds-services/avh-patient-view"
BUNDLE = b'"resourceType":"Bundle","type":"searchset"'


@pytest.fixture(autouse=True, params=["under SAMPLED", "larger"])
def lazily_whatever_the_size(monkeypatch, request):
    """These bodies are small: without this, orjson would decode them (lazyjson.SMALLEST), and sampled Bundles mostly
    kept too (lazyjson.SAMPLE): the lazy path is what is under test, as a body under lazyjson.SAMPLED is read
    (entries as Structs, in one pass) and as a larger one."""
    monkeypatch.setattr(service.lazyjson, "SMALLEST", 0)
    monkeypatch.setattr(service.lazyjson, "SAMPLE", 0)
    if request.param == "larger":
        monkeypatch.setattr(service.lazyjson, "SAMPLED", 0)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off"},
                                       sqlite_path=tmp_path_factory.mktemp("store") / "avh-cds.sqlite3"))
    return app.test_client()


def chart_request() -> bytes:
    """A patient-view call whose prefetch (a Patient, Bundles of the rest) gives cards."""
    resources = pre_operative_chart(PATIENT)
    prefetch = {"patient": resources[0], "conditions": searchset(resources[1:3]),
                "observations": searchset(resources[3:4]), "procedures": searchset(resources[4:])}
    return orjson.dumps({"hook": "patient-view", "hookInstance": str(uuid.UUID(int=7)),
                         "context": {"patientId": PATIENT, "userId": "Practitioner/d"}, "prefetch": prefetch})


def answer(client, raw: bytes) -> tuple[int, object]:
    response = client.post(INVOKE, data=raw, headers={"Content-Type": "application/json"})
    return response.status_code, without_uuids(response.get_json())


def orjson_answer(client, raw: bytes, monkeypatch) -> tuple[int, object]:
    """The answer when the body is decoded as before the lazy decoder: orjson.loads, whole."""
    with monkeypatch.context() as m:
        m.setattr(service.jsonbody, "decode", orjson.loads)
        return answer(client, raw)


def assert_answers_as_orjson(client, raw: bytes, monkeypatch) -> tuple[int, object]:
    expected = orjson_answer(client, raw, monkeypatch)
    assert answer(client, raw) == expected
    return expected


def deep(levels: int) -> bytes:
    return b"[" * levels + b"1" + b"]" * levels


def test_the_chart_gives_cards_either_way(client, monkeypatch):
    status, body = assert_answers_as_orjson(client, chart_request(), monkeypatch)
    assert status == 200 and body["cards"]


# Finding 1: pysimdjson's `object[key]` stops at a NUL in the key, so of {"x\u0000": A, "x": B} the decoder read B as
# the value of both keys: the limits (depth, resources) measured B twice and never A.
@pytest.mark.parametrize("before, inserted", [
    (b'"context":', b'"x\\u0000":' + deep(100) + b',"x":1,'),                 # in the body
    (b'"context":', b'"x":1,"x\\u0000":' + deep(100) + b','),                 # the same, the short key first
    (BUNDLE, b'"meta\\u0000":' + deep(100) + b',"meta":{},'),                 # in a prefetch Bundle
    (BUNDLE, b'"entry\\u0000":' + deep(100) + b','),                          # beside the Bundle's entries
], ids=["body", "body-short-key-first", "bundle", "bundle-beside-entry"])
def test_a_key_with_a_nul_is_not_read_as_the_key_before_the_nul(client, monkeypatch, before, inserted):
    raw = chart_request().replace(before, inserted + before, 1)
    assert inserted in raw
    status, body = assert_answers_as_orjson(client, raw, monkeypatch)
    assert status == 400 and body["error"] == "json_too_deep"


def test_a_prefetch_key_with_a_nul_counts_its_own_entries(client, monkeypatch):
    entries = b"[" + b",".join([b"{}"] * 20_001) + b"]"
    raw = chart_request().replace(b'"prefetch":{', b'"prefetch":{"z\\u0000":{"resourceType":"Bundle","entry":' + entries
                                  + b'},"z":{"resourceType":"Patient"},', 1)
    status, body = assert_answers_as_orjson(client, raw, monkeypatch)
    assert status == 413 and body["error"] == "too_many_resources"


# Finding 2: msgspec decoded the `entry` array of every prefetch object, Bundle or not, although only Bundles' entries
# are read lazily: an array of 5,000,000 `{}` under a Patient's "entry" (15 MB) was decoded twice, by simdjson's
# as_dict and by msgspec (2.8 s and 1.1 GB at peak, orjson: 1.8 s and 0.66 GB).
def peak_bytes(call) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_entries_of_a_prefetch_value_that_is_no_bundle_are_decoded_once():
    tiny = b"[" + b",".join([b"{}"] * 200_000) + b"]"
    raw = chart_request().replace(b'"prefetch":{"patient":{', b'"prefetch":{"patient":{"entry":' + tiny + b",", 1)
    templates = {"patient": TEMPLATES["patient"], "conditions": TEMPLATES["conditions"]}

    def resolve(decoder):
        return lambda: PrefetchResolver(wanted=SELECTOR.wanted).resolve(templates, decoder(raw))
    assert peak_bytes(resolve(decode)) < 1.25 * peak_bytes(resolve(orjson.loads))


# Finding 3: pysimdjson keeps 24 bits of an array's length. Of an array of 17,000,000 elements (a body of 34 MB:
# only with AVH_CDS_MAX_BODY_BYTES raised), len() gave 16,777,215 (a Bundle's entries miscounted in the 413) and
# as_list() (anywhere outside the entries: the context, a prefetch value that is no Bundle) gave 16,777,215 elements
# and corrupted the heap: "free(): invalid size", the worker process aborted. orjson reads it whole.
MORE_THAN_24_BITS = 17_000_000


def elements(count: int) -> bytes:
    return b"[" + b",".join([b"0"] * count) + b"]"


def test_the_entries_of_a_bundle_beyond_24_bits_are_counted():
    raw = b'{"prefetch":{"conditions":{"resourceType":"Bundle","entry":' + elements(MORE_THAN_24_BITS) + b"}}}"
    with pytest.raises(ApiError) as refused:
        check_limits(decode(raw), 64, 20_000)
    assert refused.value.status == 413 and f"carries {MORE_THAN_24_BITS} resources" in str(refused.value)


def test_an_array_beyond_24_bits_is_decoded_whole_without_crashing(tmp_path):
    path = tmp_path / "body.json"
    path.write_bytes(b'{"context":{"x":' + elements(MORE_THAN_24_BITS) + b"}}")
    decoded = subprocess.run([sys.executable, "-c", "import sys; from service.lazyjson import decode; "
                              "print(len(decode(open(sys.argv[1], 'rb').read())['context']['x']))", str(path)],
                             capture_output=True, text=True, timeout=300)
    assert decoded.returncode == 0 and decoded.stdout.split() == [str(MORE_THAN_24_BITS)], decoded.stderr[-300:]


# Finding 4: the decoder read the body, prefetch and each prefetch Bundle key by key, and pysimdjson's `object[key]`
# looks a key up from the object's start: quadratic in the keys. 40,000 keys in prefetch (430 KB) took 6 s (orjson:
# 5 ms); the 1,300,000 a 16 MB body holds, hours of a worker's thread.
@pytest.mark.parametrize("where", ["body", "prefetch", "bundle"])
def test_an_object_of_many_keys_costs_no_more_than_orjson_by_far(where):
    keys = b",".join(b'"k%d":0' % i for i in range(60_000))
    raw = {"body": b"{" + keys + b',"prefetch":{}}',
           "prefetch": b'{"prefetch":{' + keys + b"}}",
           "bundle": b'{"prefetch":{"conditions":{"resourceType":"Bundle","entry":[],' + keys + b"}}}"}[where]
    started = time.perf_counter()
    assert decode(raw) == orjson.loads(raw)
    assert time.perf_counter() - started < 2.0


# Finding 5: when msgspec could not skip the prefetch values (a value nested ~1,000 deep: simdjson and orjson read
# it, msgspec stops at Python's recursion limit), each Bundle read tried again: the body skipped once per Bundle.
class CountingDecoder:
    def __init__(self, decoder):
        self.decoder, self.calls = decoder, 0

    def decode(self, raw):
        self.calls += 1
        return self.decoder.decode(raw)


def test_a_body_msgspec_cannot_skip_is_tried_once(monkeypatch):
    deep_value = b'"deep":' + b"[" * 1010 + b"]" * 1010 + b","
    raw = chart_request().replace(b'"prefetch":{', b'"prefetch":{' + deep_value, 1)
    counting = CountingDecoder(service.lazyjson._PREFETCH)
    monkeypatch.setattr(service.lazyjson, "_PREFETCH", counting)
    resolved = PrefetchResolver(wanted=SELECTOR.wanted).resolve(TEMPLATES, decode(raw))
    expected = PrefetchResolver(wanted=SELECTOR.wanted).resolve(TEMPLATES, orjson.loads(raw))
    assert resolved == expected and counting.calls == 1


# Finding 6: a key given twice was told from the dict made of the object's decoded fields, each value decoded first;
# `[key]` gives the first value each time, so a 10 MB `context` given 60 times was decoded 60 times (32 s of a
# worker's CPU, orjson's decode 0.8 s). Told now before any value is decoded, as an orjson body.
@pytest.mark.parametrize("where", ["body", "prefetch", "bundle"])
def test_a_key_given_twice_is_told_before_any_value_is_decoded(monkeypatch, where):
    value = b'{"resourceType":"Bundle","meta":{"tag":[1]},"entry":[]}'
    raw = {"body": b'{' + b'"context":{"x":[1,2,3]},' * 60 + b'"prefetch":{}}',
           "prefetch": b'{"prefetch":{' + b",".join([b'"conditions":' + value] * 60) + b"}}",
           "bundle": b'{"prefetch":{"conditions":' + value.replace(b'"meta"', b'"meta":1,' * 60 + b'"meta"') + b"}}"}[where]
    decoded = []
    monkeypatch.setattr(service.lazyjson, "plain", lambda value: decoded.append(value))
    monkeypatch.setattr(service.lazyjson, "Entries", lambda *args: decoded.append(args))
    assert decode(raw) == orjson.loads(raw) and decoded == []


# Finding 7: an OperationOutcome or a Patient in a Bundle read as Structs was read whole when met, each read walking
# the entries from the array's start: quadratic, 20,000 OperationOutcomes took 0.6 s (0.08 s before they were read
# whole). They are read after the walk, in one read.
@pytest.mark.parametrize("resource, patient", [
    ({"resourceType": "OperationOutcome", "issue": [{"severity": "warning"}]}, PATIENT),
    ({"resourceType": "Patient", "id": PATIENT}, PATIENT),
    ({"resourceType": "Patient", "id": PATIENT}, None)])
def test_the_resources_read_whole_to_check_them_are_read_in_one_read(monkeypatch, resource, patient):
    condition = {"resourceType": "Condition", "subject": {"reference": f"Patient/{PATIENT}"}}
    raw = orjson.dumps({"prefetch": {"conditions": searchset([resource, condition] * 100)}})
    reads = []
    whole = service.lazyjson.Entries._whole
    monkeypatch.setattr(service.lazyjson.Entries, "_whole", lambda self, positions: reads.append(positions) or
                        whole(self, positions))
    read = read_resources(decode(raw)["prefetch"]["conditions"], patient, SELECTOR.wanted)
    assert read == read_resources(orjson.loads(raw)["prefetch"]["conditions"], patient, SELECTOR.wanted)
    assert reads and len(reads) <= 2
