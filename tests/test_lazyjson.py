"""The lazy request decoder (service/lazyjson.py) against orjson: for every body, what prefetch reads of it (resources
kept, read counts, unusable verdicts, next links), the limits and the answer are those of orjson.loads."""
from __future__ import annotations

import gc
import json
import uuid

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import service.jsonbody
import service.lazyjson
from service import create_app
from service.api.registry import prefetch_templates
from service.clinical.record import Selector
from service.clinical.valuesets import load_valuesets
from service.config import PROJECT_ROOT, Settings
from service.errors import ApiError
from service.fhir.prefetch import READS, PrefetchFailed, PrefetchResolver, next_link, read_resources
from service.lazyjson import Entries, decode
from service.security.limits import check_limits
from tests.fhir_records import named_in_pathway_chart, searchset
from tests.security_support import INVOKE

VALUESETS = load_valuesets(PROJECT_ROOT / "cards" / "valuesets")
SELECTOR = Selector(VALUESETS)
TEMPLATES = prefetch_templates(VALUESETS)
PATIENT, OTHER = "p1", "p2"
SMALLEST, SAMPLED, SAMPLE = service.lazyjson.SMALLEST, service.lazyjson.SAMPLED, service.lazyjson.SAMPLE


@pytest.fixture(autouse=True, scope="module")
def every_body_lazily():
    """Small bodies too (orjson decodes those below lazyjson.SMALLEST)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(service.lazyjson, "SMALLEST", 0)
        yield


class Obj(list):
    """A JSON object as its (key, value) pairs, in order: a key may be given twice."""

    def __add__(self, pairs):
        return Obj(list(self) + list(pairs))


def text(value, escape_keys: bool = False) -> bytes:
    """JSON text of a value made of Obj, lists and scalars; keys \\u-escaped when asked."""
    if isinstance(value, Obj):
        return b"{" + b",".join((json.dumps(k, ensure_ascii=True).encode() if not escape_keys else
                                 b'"' + "".join(f"\\u{ord(c):04x}" for c in k).encode() + b'"')
                                + b":" + text(v, escape_keys) for k, v in value) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(text(v, escape_keys) for v in value) + b"]"
    if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**64:
        return str(value).encode()
    return orjson.dumps(value)


def bundles(body) -> dict:
    prefetch = body.get("prefetch") if isinstance(body, dict) else None
    return {k: v for k, v in prefetch.items() if isinstance(v, dict)} if isinstance(prefetch, dict) else {}


def lazy(body):
    """A decoded body with every Entries read whole: what orjson gives, if the decoder is right."""
    if not bundles(body):
        return body
    return {**body, "prefetch": {key: {k: v.read(None, None)[0] if isinstance(v, Entries) else v for k, v in value.items()}
                                 if isinstance(value, dict) else value for key, value in body["prefetch"].items()}}


def has_entries(body) -> bool:
    return any(isinstance(v, Entries) for bundle_ in bundles(body).values() for v in bundle_.values())


def same_json(a, b) -> bool:
    """a == b, keys in the same order and bool, int and float told apart, at any depth (without recursion)."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if type(x) is dict:
            if list(x) != list(y):
                return False
            stack += [(x[k], y[k]) for k in x]
        elif type(x) is list:
            if len(x) != len(y):
                return False
            stack += zip(x, y)
        elif x != y:
            return False
    return True


def relevant_codes(rtype: str) -> list[tuple[str, str]]:
    return sorted(SELECTOR.by_type[rtype][1])[:2]


# --- generated prefetch ----------------------------------------------------------------------------------------

number = st.one_of(st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False))
junk = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), number, st.text(max_size=4),
                 st.lists(st.integers(-3, 3), max_size=2))


def obj(*pairs, dup=None):
    """An Obj of the pairs whose value is not None (None drops the key), with `dup` (a pair) appended."""
    made = Obj((k, v) for k, v in pairs if v is not None)
    return made + [dup] if dup else made


def maybe(draw, mess: int, good, bad=junk):
    """A value drawn from good, or from bad once in `mess` times (never when mess is 0)."""
    return draw(bad) if mess and draw(st.integers(0, mess - 1)) == 0 else draw(good)


@st.composite
def reference(draw, mess: int):
    whose = maybe(draw, 12, st.just(f"Patient/{PATIENT}"), st.sampled_from(
        [f"Patient/{OTHER}", "Group/g", f"https://x/Patient/{PATIENT}", f"Patient/{PATIENT}/", f"Patient/{OTHER}/"]))
    return maybe(draw, mess, st.just(obj(("reference", whose))), st.one_of(junk, st.just(
        Obj([("reference", f"Patient/{OTHER}"), ("reference", whose)])), st.sampled_from(
        # objects read as a Reference Struct with no reference, of which only one is passed over by `subject or patient`
        [Obj([]), obj(("display", "x")), Obj([("reference", None)]), obj(("reference", [whose]))])))


@st.composite
def concept(draw, rtype: str, mess: int):
    known = relevant_codes(rtype) if rtype in SELECTOR.by_type else []
    coding = st.sampled_from(known + [("http://other", "123"), ("http://snomed.info/sct", "1")]).map(
        lambda c: obj(("system", c[0]), ("code", c[1]), ("display", "Dexamethasone tablet")))
    # A system or code that is an array or object: msgspec refuses the Struct pass (lazyjson._Coding), read by keys.
    odd = st.sampled_from([obj(("system", known[0][0] if known else "s"), ("code", [c])) for c in ("1", "3264")]
                          + [obj(("system", obj(("a", 1))), ("code", "3264"))])
    codings = maybe(draw, mess, st.lists(st.one_of(coding, coding, coding, junk, odd) if mess else coding,
                                         max_size=3))
    text_ = draw(st.sampled_from([None, "dexamethasone", "aspirin"]))
    dup = ("coding", draw(st.lists(coding, max_size=2))) if mess and draw(st.integers(0, 3)) == 0 else None
    return maybe(draw, mess, st.just(obj(("coding", codings), ("text", text_), dup=dup)))


RTYPES = ["Condition", "Observation", "Procedure", "DiagnosticReport", "ServiceRequest", "MedicationRequest",
          "MedicationAdministration", "Medication", "Patient", "Encounter", "OperationOutcome"]


@st.composite
def resource(draw, mess: int):
    rtype = maybe(draw, mess, st.sampled_from(RTYPES), st.sampled_from([5, None, "", "Bundle"]))
    code_key = "medicationCodeableConcept" if rtype in ("MedicationRequest", "MedicationAdministration") else "code"
    pairs = [("resourceType", rtype), ("id", draw(st.sampled_from([PATIENT, PATIENT, OTHER, "r1", "r2", 7])))]
    if rtype == "OperationOutcome":
        severity = st.sampled_from(["error", "fatal", "warning", "information"]).map(lambda s: obj(("severity", s)))
        pairs.append(("issue", maybe(draw, mess, st.lists(st.one_of(severity, junk) if mess else severity,
                                                          max_size=2))))
    if draw(st.integers(0, 5)):
        pairs.append((draw(st.sampled_from(["subject", "subject", "patient"])), draw(reference(mess))))
    if draw(st.integers(0, 7)) == 0:        # both: `subject or patient` reads the patient after an empty subject
        pairs += [("subject", draw(reference(mess))), ("patient", draw(reference(mess)))]
    if draw(st.integers(0, 5)):
        pairs.append((code_key, draw(concept(rtype if isinstance(rtype, str) else "x", mess))))
    if rtype in ("MedicationRequest", "MedicationAdministration") and draw(st.booleans()):
        pairs.append(("medicationReference", maybe(draw, mess, st.just(obj(("reference", "Medication/m1"))))))
    pairs.append(("meta", obj(("versionId", "1"), ("tag", [obj(("code", "x"))]))))
    value = 2**70 if draw(st.integers(0, 60)) == 0 else draw(number)   # beyond 64 bits: orjson decodes the body
    pairs.append(("valueQuantity", obj(("value", value))))
    pairs = draw(st.permutations(pairs))
    if mess and draw(st.integers(0, 3)) == 0:          # a key given twice: orjson keeps the last
        key = draw(st.sampled_from(["resourceType", "subject", "code", "medicationCodeableConcept", "id", "issue"]))
        pairs.append((key, draw(st.one_of(st.sampled_from(RTYPES), concept("Condition", mess), reference(mess)))))
    return Obj(pairs)


@st.composite
def entry(draw, mess: int):
    search = st.sampled_from(["match", "match", "include", "outcome"]).map(lambda m: obj(("mode", m)))
    pairs = [("fullUrl", "https://ehr/x"), ("resource", maybe(draw, mess, resource(mess))),
             ("search", maybe(draw, mess, search))]
    pairs = [p for p in pairs if draw(st.integers(0, 8))]          # now and then without one of them
    if mess and draw(st.integers(0, 5)) == 0:
        pairs.append(("resource", draw(resource(mess))))
    return maybe(draw, mess, st.just(Obj(pairs)))


@st.composite
def bundle(draw):
    mess = draw(st.sampled_from([0, 0, 30, 10, 3]))
    pairs = [("resourceType", "Bundle"), ("type", "searchset"),
             ("entry", maybe(draw, mess, st.lists(entry(mess), max_size=10), st.one_of(
                 junk, st.just(obj(("resource", obj(("resourceType", "Condition"))))))))]
    if draw(st.booleans()):
        pairs.append(("total", maybe(draw, mess, st.integers(0, 12))))
    if draw(st.integers(0, 3)) == 0:
        pairs.append(("link", [obj(("relation", "next"), ("url", "https://ehr/next"))]))
    pairs = draw(st.permutations(pairs))
    if mess and draw(st.integers(0, 10)) == 0:
        pairs.append(draw(st.sampled_from([("resourceType", "Bundle"), ("resourceType", "Patient"),
                                           ("entry", []), ("entry", [Obj([("resource", obj(("resourceType", 1)))])])])))
    return Obj(pairs)


@st.composite
def body(draw):
    keys = draw(st.lists(st.sampled_from(list(TEMPLATES)), max_size=4, unique=True))
    prefetch = Obj((k, draw(st.one_of(bundle(), bundle(), bundle(), resource(draw(st.sampled_from([0, 3]))),
                                      st.none(), junk))) for k in keys)
    if draw(st.integers(0, 20)) == 0 and keys:
        prefetch.append((keys[0], draw(bundle())))
    return Obj([("hook", "patient-view"), ("hookInstance", str(uuid.UUID(int=7))),
                ("context", obj(("patientId", PATIENT))), ("prefetch", prefetch)])


def outcome(call):
    try:
        return ("ok", call())
    except (ApiError, PrefetchFailed) as exc:
        return ("raised", type(exc).__name__, str(exc), getattr(exc, "status", None))


def resolved(request):
    if not isinstance(request.get("prefetch"), dict):
        return None
    result = outcome(lambda: PrefetchResolver(wanted=SELECTOR.wanted).resolve(TEMPLATES, request))
    if result[0] == "ok":
        p = result[1]
        return ("ok", p.resources, p.unavailable, p.sources, p.read)
    return result


def without_reads(resource):
    return SELECTOR.wanted(resource)    # the same choice, by a selector that does not say what it reads


def assert_reads_alike(raw: bytes):
    """What prefetch, the limits and the resolver make of `raw`, decoded lazily and by orjson; lazily as a body under
    SAMPLED is read (every Bundle's entries in one pass, as Structs when they are of FHIR's shape), and as a larger
    one, whether or not a sample of the entries is mostly kept (SAMPLE 0: no sample, read by their keys)."""
    for sampled, sample in ((SAMPLED, SAMPLE), (0, SAMPLE), (0, 0)):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(service.lazyjson, "SAMPLED", sampled)
            patch.setattr(service.lazyjson, "SAMPLE", sample)
            assert_read_alike(raw)


def assert_read_alike(raw: bytes):
    try:
        eager = orjson.loads(raw)
    except orjson.JSONDecodeError:
        with pytest.raises(orjson.JSONDecodeError):
            decode(raw)
        return
    decoded = decode(raw)
    assert same_json(lazy(decoded), eager)
    for depth, most in ((400, 20_000), (5, 3)):
        assert outcome(lambda: check_limits(decoded, depth, most)) == outcome(lambda: check_limits(eager, depth, most))
    prefetch = eager.get("prefetch") if isinstance(eager, dict) else None
    for key, value in (prefetch.items() if isinstance(prefetch, dict) else ()):
        if not isinstance(value, dict):
            continue
        for wanted in (SELECTOR.wanted, None, without_reads):
            for patient in (PATIENT, None):
                lazily = read_resources(decode(raw)["prefetch"][key], patient, wanted)
                read = read_resources(value, patient, wanted)
                assert lazily[1:] == read[1:] and same_json(lazily.resources, read.resources)
        assert next_link(decoded["prefetch"][key], None) == next_link(value, None)
    lazily, read = resolved(decode(raw)), resolved(eager)
    assert same_json(lazily[1], read[1]) and lazily[2:] == read[2:] if lazily and lazily[0] == "ok" else lazily == read


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body(), st.booleans())
def test_generated_prefetch_reads_as_with_orjson(request, escape_keys):
    assert_reads_alike(text(request, escape_keys))


# --- one test per known trap ----------------------------------------------------------------------------------

def chart_body(entries: list, **prefetch) -> bytes:
    """A request whose conditions Bundle holds these entries (Obj or plain), as JSON text."""
    bundle_ = Obj([("resourceType", "Bundle"), ("type", "searchset"), ("entry", entries)])
    return text(Obj([("hook", "patient-view"), ("hookInstance", str(uuid.UUID(int=7))),
                     ("context", obj(("patientId", PATIENT))),
                     ("prefetch", Obj([("conditions", bundle_), *prefetch.items()]))]))


def condition(code: tuple[str, str], patient: str = PATIENT, rid: str = "c1") -> Obj:
    return Obj([("resourceType", "Condition"), ("id", rid), ("subject", obj(("reference", f"Patient/{patient}"))),
                ("code", obj(("coding", [obj(("system", code[0]), ("code", code[1]))])))])


HEMANGIOMA = relevant_codes("Condition")[0]
IRRELEVANT = ("http://other", "123")


def kept(raw: bytes) -> list:
    return read_resources(decode(raw)["prefetch"]["conditions"], PATIENT, SELECTOR.wanted).resources


def test_entry_giving_resource_twice_is_read_by_its_last():
    last_relevant = chart_body([Obj([("resource", condition(IRRELEVANT)), ("resource", condition(HEMANGIOMA))])])
    first_relevant = chart_body([Obj([("resource", condition(HEMANGIOMA)), ("resource", condition(IRRELEVANT))])])
    assert kept(last_relevant) == [orjson.loads(last_relevant)["prefetch"]["conditions"]["entry"][0]["resource"]]
    assert kept(first_relevant) == []
    assert_reads_alike(last_relevant)
    assert_reads_alike(first_relevant)


def test_resource_giving_code_or_subject_twice_is_read_by_its_last():
    twice = condition(IRRELEVANT) + [("code", obj(("coding", [obj(("system", HEMANGIOMA[0]), ("code", HEMANGIOMA[1]))])))]
    raw = chart_body([Obj([("resource", twice)])])
    assert len(kept(raw)) == 1 and kept(raw)[0]["code"]["coding"][0]["code"] == HEMANGIOMA[1]
    other_last = condition(HEMANGIOMA) + [("subject", obj(("reference", f"Patient/{OTHER}")))]
    raw = chart_body([Obj([("resource", other_last)])])
    assert read_resources(decode(raw)["prefetch"]["conditions"], PATIENT, SELECTOR.wanted).unusable == "other-patient"
    assert_reads_alike(raw)


def test_medications_are_chosen_by_their_code_or_names_in_their_bundles_order():
    """A Medication is kept for its code, its code's text or a coding's display naming dexamethasone: the Struct pass
    must read those names of a Medication's `code` (issue 18, walk7: a `code` read without them saved ~56 k
    instructions a call at N = 100, but each Medication its code does not tell was then read whole: +0.55 M for 30
    aspirin Medications included beside their MedicationRequests), and keeps them in the Bundle's order."""
    def medication(rid: str, concept: Obj) -> Obj:
        return Obj([("resourceType", "Medication"), ("id", rid), ("code", concept)])
    dexamethasone = sorted(SELECTOR.by_type["Medication"][1])[0]
    entries = [Obj([("resource", condition(HEMANGIOMA))]),
               Obj([("resource", medication("named", obj(("text", "Dexamethasone 4 mg"))))]),
               Obj([("resource", medication("other", obj(("coding", [obj(("system", "x"), ("code", "1"),
                                                                         ("display", "aspirin"))]))))]),
               Obj([("resource", medication("coded", obj(("coding", [obj(("system", dexamethasone[0]),
                                                                         ("code", dexamethasone[1]))]))))]),
               Obj([("resource", medication("displayed", obj(("coding", [obj(("display", "DEXAMETHASONE"))]))))])]
    raw = chart_body(entries)
    assert decode(raw)["prefetch"]["conditions"]["entry"].typed(SELECTOR.wanted.concepts, SELECTOR.wanted) is not None
    assert [r["id"] for r in kept(raw)] == ["c1", "named", "coded", "displayed"]
    assert_reads_alike(raw)


def test_a_key_given_twice_above_the_entries_is_decoded_by_orjson():
    for raw in (chart_body([Obj([("resource", condition(HEMANGIOMA))])]).replace(b'"prefetch":', b'"prefetch":{},"prefetch":'),
                chart_body([Obj([("resource", condition(HEMANGIOMA))])]).replace(b'"type":', b'"entry":[],"type":'),
                chart_body([Obj([("resource", condition(HEMANGIOMA))])]).replace(b'"type":', b'"resourceType":"Patient","type":'),
                chart_body([], conditions=searchset_obj([condition(HEMANGIOMA)]))):
        assert type(decode(raw)) is dict and not has_entries(decode(raw))
        assert_reads_alike(raw)


def test_an_escaped_key_is_the_key_it_spells():
    raw = text(Obj([("hook", "patient-view"), ("context", obj(("patientId", PATIENT))), ("prefetch", Obj([
        ("conditions", Obj([("resourceType", "Bundle"), ("entry", [Obj([("resource", condition(IRRELEVANT)),
                                                                         ("resource", condition(HEMANGIOMA))])])]))]))]),
               escape_keys=True)
    assert len(kept(raw)) == 1
    assert_reads_alike(raw)


def searchset_obj(resources: list) -> Obj:
    return Obj([("resourceType", "Bundle"), ("entry", [Obj([("resource", r)]) for r in resources])])


def test_integers_beyond_64_bits_decode_as_orjson_reads_them():
    for number in (2**64, -(2**63) - 1, 10**30):
        raw = chart_body([Obj([("resource", condition(HEMANGIOMA) + [("onsetAge", obj(("value", number)))])])])
        assert decode(raw) == orjson.loads(raw)          # a float, as orjson reads it; simdjson refuses the body
        assert_reads_alike(raw)
    raw = chart_body([Obj([("resource", condition(HEMANGIOMA) + [("onsetAge", obj(("value", 2**64 - 1)))])])])
    assert has_entries(decode(raw)) and kept(raw)[0]["onsetAge"]["value"] == 2**64 - 1


def test_nul_bytes_are_refused_raw_and_read_escaped():
    base = chart_body([Obj([("resource", condition(HEMANGIOMA, rid="c\x00"))])])
    assert b"\\u0000" in base
    assert kept(base)[0]["id"] == "c\x00"
    assert_reads_alike(base)
    assert_reads_alike(base.replace(b"\\u0000", b"\x00"))
    assert_reads_alike(base.replace(b'"type"', b'"ty\\u0000pe"'))


def test_invalid_utf8_is_refused_as_orjson_refuses_it():
    base = chart_body([Obj([("resource", condition(HEMANGIOMA, rid="c-X"))])])
    for bad in (b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"):
        with pytest.raises(orjson.JSONDecodeError):
            decode(base.replace(b"c-X", b"c-" + bad))
        assert_reads_alike(base.replace(b"c-X", b"c-" + bad))


def test_lone_surrogate_escapes_are_refused_and_pairs_read():
    base = chart_body([Obj([("resource", condition(HEMANGIOMA, rid="c-X"))])])
    for escape in (b"\\ud800", b"\\udc00", b"\\ud800x", b"\\ud800\\ud800"):
        with pytest.raises(orjson.JSONDecodeError):
            decode(base.replace(b"c-X", escape))
    pair = base.replace(b"c-X", b"\\ud83d\\ude00")
    assert kept(pair)[0]["id"] == "\U0001F600"
    assert_reads_alike(pair)


def test_a_byte_order_mark_is_refused_as_orjson_refuses_it():
    raw = b"\xef\xbb\xbf" + chart_body([Obj([("resource", condition(HEMANGIOMA))])])
    with pytest.raises(orjson.JSONDecodeError):
        decode(raw)


@pytest.mark.parametrize("shape", [b"[%s]", b'{"a":%s}'])
def test_nesting_around_1024_levels_decodes_or_fails_as_orjson(shape):
    for depth in (1015, 1018, 1019, 1020, 1021, 1022, 1030, 5000):
        inner = b"1"
        for _ in range(depth):
            inner = shape % inner
        assert_reads_alike(chart_body([Obj([("resource", condition(HEMANGIOMA) + [("deep", "X")])])])
                           .replace(b'"X"', inner))
        assert_reads_alike(chart_body([]).replace(b'"hook"', b'"deep":' + inner + b',"hook"'))


def test_an_entry_that_is_not_a_list_reads_as_with_orjson():
    for value in (b"{}", b'{"resource":{"resourceType":"Condition"}}', b'"x"', b"0", b'""', b"null", b"false",
                  b"3.5", b"[]"):
        raw = chart_body([]).replace(b'"entry":[]', b'"entry":' + value)
        assert_reads_alike(raw)
    malformed = chart_body([]).replace(b'"entry":[]', b'"entry":"x"')
    assert read_resources(decode(malformed)["prefetch"]["conditions"], PATIENT, SELECTOR.wanted).unusable == "malformed"


def test_entries_and_resources_that_are_not_objects_read_as_with_orjson():
    good = Obj([("resource", condition(HEMANGIOMA))])
    for junk_ in (1, "x", None, [good], True, 2.5):
        for entries in ([junk_], [good, junk_], [Obj([("resource", junk_)])], [good, Obj([("resource", junk_)])]):
            raw = chart_body(entries)
            assert_reads_alike(raw)
            assert has_entries(decode(raw))
    raw = chart_body([good, Obj([("resource", "x")])])
    assert read_resources(decode(raw)["prefetch"]["conditions"], PATIENT, SELECTOR.wanted).unusable == "malformed"


def test_each_body_has_its_own_parser():
    first = decode(chart_body([Obj([("resource", condition(HEMANGIOMA, rid="first"))])]))
    second = decode(chart_body([Obj([("resource", condition(HEMANGIOMA, rid="second"))])]))
    assert [r["id"] for r in read_resources(second["prefetch"]["conditions"], PATIENT, SELECTOR.wanted).resources] \
        == ["second"]
    assert [r["id"] for r in read_resources(first["prefetch"]["conditions"], PATIENT, SELECTOR.wanted).resources] \
        == ["first"]


def test_only_bodies_from_the_smallest_size_on_are_decoded_lazily(monkeypatch):
    monkeypatch.setattr(service.lazyjson, "SMALLEST", SMALLEST)
    entries = [Obj([("resource", condition(IRRELEVANT, rid=f"x{i}"))]) for i in range(SMALLEST // 100)]
    assert len(chart_body(entries)) >= SMALLEST and has_entries(decode(chart_body(entries)))
    assert len(chart_body(entries[:10])) < SMALLEST and not has_entries(decode(chart_body(entries[:10])))
    assert decode(chart_body(entries[:10])) == orjson.loads(chart_body(entries[:10]))


def test_entries_mostly_kept_by_a_sample_are_read_from_orjson(monkeypatch):
    monkeypatch.setattr(service.lazyjson, "SAMPLE", SAMPLE)
    monkeypatch.setattr(service.lazyjson, "SAMPLED", 0)
    relevant = [Obj([("resource", condition(HEMANGIOMA, rid=f"c{i}"))]) for i in range(40)]
    irrelevant = [Obj([("resource", condition(IRRELEVANT, rid=f"x{i}"))]) for i in range(40)]
    for entries, by_keys in ((relevant + irrelevant[:5], False), (irrelevant + relevant[:5], True)):
        raw = chart_body(entries)
        _, resources_at = decode(raw)["prefetch"]["conditions"]["entry"].read(READS | SELECTOR.wanted.reads,
                                                                               SELECTOR.wanted)
        assert (resources_at is not None) == by_keys
        assert (decode(raw)["prefetch"]["conditions"]["entry"].typed(SELECTOR.wanted.concepts, SELECTOR.wanted)
                is not None) == by_keys
        assert_reads_alike(raw)


def test_a_small_body_of_fhirs_shape_is_read_as_structs_and_any_other_by_its_keys():
    """Under SAMPLED: entries of FHIR's shape are read as Structs; a coding that is not an object (or a subject
    that is not an object, a search that is not an object) sends the body to the entries read by their keys."""
    relevant = Obj([("resource", condition(HEMANGIOMA)), ("search", obj(("mode", "match")))])
    shaped = chart_body([relevant, Obj([("resource", condition(IRRELEVANT, rid="x1"))])])
    assert decode(shaped)["prefetch"]["conditions"]["entry"].typed(SELECTOR.wanted.concepts, SELECTOR.wanted) is not None
    assert [r["id"] for r in kept(shaped)] == ["c1"]
    assert_reads_alike(shaped)
    for usual, odd in ((b'"coding":[', b'"coding":[1,'), (b'"resource":', b'"search":"x","resource":'),
                       (b'"code":', b'"code":5,"code":'), (b'"id":"x1"', b'"id":"x1","resourceType":"Observation"'),
                       (b'"resourceType":"Condition","id":"x1"', b'"resourceType":"Conditions","id":"x1"')):
        raw = shaped.replace(usual, odd, 1)
        assert raw != shaped
        assert decode(raw)["prefetch"]["conditions"]["entry"].typed(SELECTOR.wanted.concepts, SELECTOR.wanted) is None
        assert_reads_alike(raw)


def test_a_resource_type_given_twice_is_read_by_its_last():
    """msgspec's tagged union reads a resource's type before its fields: one given twice with two values is refused
    (so the Bundle is read by its keys), never read by the first, as orjson keeps the last."""
    for first, last, ids in (("Observation", "Condition", ["c1"]), ("Condition", "Observation", [])):
        twice = Obj([("resourceType", first)] + condition(HEMANGIOMA)[1:] + [("resourceType", last)])
        raw = chart_body([Obj([("resource", twice)])])
        assert decode(raw)["prefetch"]["conditions"]["entry"].typed(SELECTOR.wanted.concepts, SELECTOR.wanted) is None
        assert [r["id"] for r in kept(raw)] == ids
        assert_reads_alike(raw)


def test_only_a_types_own_concept_is_read_as_structs():
    """Each resource type's Struct holds its own concept only: a Condition's medicationCodeableConcept or an
    Encounter's code, whatever they hold, do not send the Bundle to be read by its keys, and choose nothing."""
    odd = [Obj([("resource", condition(IRRELEVANT, rid="x1") + [("medicationCodeableConcept", 5)])]),
           Obj([("resource", Obj([("resourceType", "Encounter"), ("id", "e1"), ("code", [list(HEMANGIOMA)]),
                                  ("subject", obj(("reference", f"Patient/{PATIENT}")))]))]),
           Obj([("resource", condition(HEMANGIOMA))])]
    raw = chart_body(odd)
    assert decode(raw)["prefetch"]["conditions"]["entry"].typed(SELECTOR.wanted.concepts, SELECTOR.wanted) is not None
    assert [r["id"] for r in kept(raw)] == ["c1"]
    assert_reads_alike(raw)


def test_kept_resources_are_plain_dicts_in_orjsons_key_order():
    raw = chart_body([Obj([("resource", condition(HEMANGIOMA) + [("id", "again"), ("meta", obj(("a", 1), ("a", 2.5)))])])])
    resources = kept(raw)
    assert type(resources[0]) is dict and orjson.dumps(resources) == orjson.dumps(
        [orjson.loads(raw)["prefetch"]["conditions"]["entry"][0]["resource"]])


@pytest.mark.parametrize("relevant, irrelevant", [(3, 300), (100, 300), (300, 100)])
def test_kept_resources_are_read_whole_however_many(relevant, irrelevant):
    """A few by their index, more in one walk of the entries, most of them by orjson."""
    raw = chart_body([Obj([("resource", condition(IRRELEVANT, rid=f"x{i}"))]) for i in range(irrelevant // 2)]
                     + [Obj([("resource", condition(HEMANGIOMA, rid=f"c{i}"))]) for i in range(relevant)]
                     + [Obj([("resource", condition(IRRELEVANT, rid=f"y{i}"))]) for i in range(irrelevant // 2)])
    assert [r["id"] for r in kept(raw)] == [f"c{i}" for i in range(relevant)]
    assert_reads_alike(raw)


def test_a_resource_alone_in_a_bundle_of_a_large_body_is_read_from_the_dom(monkeypatch):
    """A Patient or OperationOutcome alone in its Bundle is read whole to check it (their id and issue are not in the
    Structs): from the DOM, not by orjson from the Bundle's slice, which a pass of the whole body would find."""
    patient = Obj([("resourceType", "Patient"), ("id", PATIENT)])
    outcome_ = Obj([("resourceType", "OperationOutcome"), ("issue", [obj(("severity", "information"))])])
    raw = chart_body([Obj([("resource", condition(IRRELEVANT, rid=f"x{i}"))]) for i in range(2000)],
                     patient=Obj([("resourceType", "Bundle"), ("entry", [Obj([("resource", patient)])])]),
                     procedures=Obj([("resourceType", "Bundle"), ("entry", [Obj([("resource", outcome_)])])]))
    assert len(raw) >= SAMPLED
    monkeypatch.setattr(service.lazyjson._Source, "_skipped", lambda self: pytest.fail("the body was skipped"))
    decoded = decode(raw)["prefetch"]
    assert read_resources(decoded["patient"], PATIENT, SELECTOR.wanted) == (
        [orjson.loads(text(patient))], 1, None, 1)
    assert read_resources(decoded["procedures"], PATIENT, SELECTOR.wanted) == ([], 0, None, 0)
    assert read_resources(decoded["conditions"], PATIENT, SELECTOR.wanted) == ([], 2000, None, 2000)


# --- the answer, end to end -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client():
    return create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_MAX_PREFETCH_RESOURCES": "50"})).test_client()


def answered(client, raw: bytes, monkeypatch, decoder) -> tuple:
    monkeypatch.setattr(service.jsonbody, "decode", decoder)
    response = client.post(INVOKE, data=raw, content_type="application/json")
    body = response.get_json(silent=True) or {}
    return response.status_code, body.get("error"), sorted(c.get("summary", "") for c in body.get("cards", ())), \
        [i.get("diagnostics") for i in body.get("issue", ())]


def request_text(prefetch_pairs: list, patient: str = "pt-1") -> bytes:
    return text(Obj([("hook", "patient-view"), ("hookInstance", str(uuid.uuid4())),
                     ("context", obj(("patientId", patient), ("userId", "Practitioner/dr-1"))),
                     ("prefetch", Obj(prefetch_pairs))]))


def pathway_prefetch() -> list:
    person, *conditions = named_in_pathway_chart()
    return [("patient", person), ("conditions", json_obj(searchset(conditions)))]


def json_obj(value):
    """A plain decoded value as Obj (so that tests can add a key twice)."""
    if isinstance(value, dict):
        return Obj((k, json_obj(v)) for k, v in value.items())
    if isinstance(value, list):
        return [json_obj(v) for v in value]
    return value


def trap_bodies() -> dict[str, bytes]:
    pathway = pathway_prefetch()
    conditions = pathway[1][1]
    entries = dict(conditions)["entry"]
    outcome_ = Obj([("resource", Obj([("resourceType", "OperationOutcome"), ("issue", [obj(("severity", "error"))])]))])
    twice = [Obj([("resource", entries[0][0][1]), ("resource", obj(("resourceType", "Basic")))])] + entries[1:]
    return {
        "cards": request_text(pathway),
        "resource twice (last irrelevant)": request_text([pathway[0], ("conditions", Obj(
            [(k, twice if k == "entry" else v) for k, v in conditions]))]),
        "operation outcome": request_text([pathway[0], ("conditions", Obj(
            [(k, v + [outcome_] if k == "entry" else v) for k, v in conditions]))]),
        "too many resources": request_text([pathway[0], ("conditions", Obj(
            [(k, v * 30 if k == "entry" else v) for k, v in conditions]))]),
        "other patient": request_text(pathway, patient="pt-2"),
        "big integer": request_text(pathway).replace(b'"pt-1"}', b'"pt-1","x":1e2,"n":123456789012345678901234567890}', 1),
        "lone surrogate": request_text(pathway).replace(b"c-1", b"\\ud800", 1),
        "invalid utf-8": request_text(pathway).replace(b"c-1", b"\xff", 1),
        "nul": request_text(pathway).replace(b"c-1", b"\x00", 1),
        "byte order mark": b"\xef\xbb\xbf" + request_text(pathway),
        "deep outside entries": request_text(pathway).replace(b'"hook"', b'"x":' + b"[" * 500 + b"]" * 500 + b',"hook"'),
        "deep inside entries": request_text(pathway).replace(b'"c-1"', b'"c-1","x":' + b"[" * 500 + b"]" * 500),
        "too deep for the parsers": request_text(pathway).replace(b'"c-1"', b'"c-1","x":' + b"[" * 1100 + b"]" * 1100),
        "entry not a list": request_text([pathway[0], ("conditions", obj(("resourceType", "Bundle"), ("entry", "x")))]),
        "entry not an object": request_text([pathway[0], ("conditions", obj(("resourceType", "Bundle"),
                                                                             ("entry", entries + [3])))]),
        "not json": request_text(pathway)[:-3],
    }


@pytest.mark.parametrize("sampled", [SAMPLED, 0])
@pytest.mark.parametrize("trap", list(trap_bodies()))
def test_the_answer_is_the_one_orjson_gives(client, monkeypatch, trap, sampled):
    """Read as a body under SAMPLED is (entries as Structs, in one pass) and as a larger one."""
    monkeypatch.setattr(service.lazyjson, "SAMPLED", sampled)
    raw = trap_bodies()[trap]
    lazily = answered(client, raw, monkeypatch, decode)
    assert lazily == answered(client, raw, monkeypatch, orjson.loads)
    assert lazily[0] in (200, 400, 412, 413)


def test_trap_answers_are_the_expected_ones(client, monkeypatch):
    statuses = {trap: answered(client, raw, monkeypatch, decode)[:2] for trap, raw in trap_bodies().items()}
    assert statuses["cards"][0] == 200 and answered(client, trap_bodies()["cards"], monkeypatch, decode)[2]
    assert statuses["operation outcome"][0] == 412 and statuses["other patient"][0] == 412
    assert statuses["too many resources"] == (413, "too_many_resources")
    assert statuses["deep outside entries"] == (400, "json_too_deep")
    for trap in ("lone surrogate", "invalid utf-8", "nul", "byte order mark", "too deep for the parsers", "not json"):
        assert statuses[trap] == (400, "invalid_json"), trap


# --- found by the generated bodies: a 500 on both decoders before ---------------------------------------------

def test_an_operation_outcome_whose_issue_is_not_a_list_is_an_error():
    for issue in (1, True, 2.5, "x", {"severity": "warning"}):
        raw = chart_body([Obj([("resource", json_obj({"resourceType": "OperationOutcome", "issue": issue}))])])
        assert read_resources(decode(raw)["prefetch"]["conditions"], PATIENT, SELECTOR.wanted).unusable == "outcome"
        assert_reads_alike(raw)


def test_an_operation_outcome_whose_severity_is_an_array_or_object_is_not_an_error():
    for severity in (["error"], {"code": "error"}, []):
        issue = [{"severity": severity}]
        raw = chart_body([Obj([("resource", json_obj({"resourceType": "OperationOutcome", "issue": issue}))])])
        assert read_resources(decode(raw)["prefetch"]["conditions"], PATIENT, SELECTOR.wanted).unusable is None
        assert read_resources(orjson.loads(raw)["prefetch"]["conditions"], PATIENT, SELECTOR.wanted).unusable is None
        assert_reads_alike(raw)


def test_a_medication_whose_coding_is_not_a_list_is_read_by_its_text():
    for coding in (True, 3, "dexamethasone", {"display": "dexamethasone"}):
        medication = json_obj({"resourceType": "Medication", "id": "m1",
                               "code": {"coding": coding, "text": "Dexamethasone 4 mg"}})
        raw = chart_body([Obj([("resource", medication)])])
        assert len(kept(raw)) == 1
        assert_reads_alike(raw)


def test_the_collector_waits_while_a_lazily_read_bundle_is_walked(monkeypatch):
    """A Bundle's entries as decoded for prefetch's walk (~7 objects an entry) are freed when the walk ends: the
    cyclic collector, which had walked them several times a call at 10,000 resources, waits until then."""
    monkeypatch.setattr(service.lazyjson, "SAMPLED", 0)
    other = ("http://snomed.info/sct", "1")
    conditions = searchset([{"resourceType": "Condition", "id": f"c{i}", "subject": {"reference": f"Patient/{PATIENT}"},
                             "code": {"coding": [{"system": other[0], "code": other[1]}]}} for i in range(300)])
    bundle_ = decode(orjson.dumps({"prefetch": {"conditions": conditions}}))["prefetch"]["conditions"]
    collecting = []

    def wanted(resource):
        collecting.append(gc.isenabled())
        return SELECTOR.wanted(resource)
    wanted.reads = SELECTOR.wanted.reads
    read = read_resources(bundle_, PATIENT, wanted)
    assert read.read == 300 and read.resources == [] and gc.isenabled()
    assert len(collecting) == 300 + SAMPLE and not any(collecting)
