"""A request body decoded as orjson decodes it, except the entries of prefetch Bundles: of those, only what prefetch
reads to choose the resources it keeps becomes Python objects, and the resources it keeps.

The EHR sends whole charts (7 MB, 10,000 resources) of which about ten are relevant; orjson.loads built Python
objects for every resource, more than half of a first-seen call's CPU. Here:
- simdjson parses the body: the check that it is JSON (UTF-8, escapes, numbers, nesting) and the DOM that
  everything outside the entries (plain dicts and lists, as orjson gives them) and the resources kept are
  decoded from (`as_dict`);
- msgspec decodes, in one pass in C, each entry's `resource` and `search` and, of each resource, only the keys
  prefetch and its selector read (`keys`): the rest of an entry is skipped without a Python object.
Where either could read the JSON differently from orjson, orjson decodes the body, whole:
- a body simdjson refuses (orjson refuses it too, or reads it: integers beyond 64 bits, objects nested 1,024
  deep), or one starting with a byte order mark (simdjson skips it, orjson refuses it);
- a body larger than 32 MB (2 x 0xFFFFFF bytes): it may hold an array longer than simdjson counts (24 bits);
- a key given twice in the body, `prefetch` or a prefetch value (simdjson's `[key]` gives the first value,
  orjson the last; `as_dict` and msgspec keep the last, as orjson does), or holding a NUL there (`[key]` stops at
  it), or more than 64 keys there (a key is looked up from the object's start);
- entries msgspec does not decode (nested deeper than Python's recursion limit).
orjson also decodes bodies under SMALLEST, and, of a body of SAMPLED or more, the entries when the selector keeps
most of a sample of them: there the two passes would cost more than they save (a body under SAMPLED has no
sample). Otherwise every Bundle's entries are decoded in one msgspec pass of the body: as Structs
(`_typed_reader`: a class per FHIR resource type, chosen by `resourceType`, holding only the concept that type is
read for) when they are of FHIR's shape, read by prefetch._read_structs and the selector's wanted_struct without a
dict made; else by their keys as above (one pass of a body under SAMPLED, Bundle by Bundle from their
slices of a larger one). One simdjson parser per body: a parser's proxies point into its buffers, which a second
parse would reuse.
"""
from __future__ import annotations

import functools
import json
import math
import re
from typing import Any, Callable, TypedDict, Union

import msgspec
import orjson
import simdjson

BYTE_ORDER_MARK = b"\xef\xbb\xbf"
# simdjson's tape keeps 24 bits of an array's length: of a longer array, pysimdjson's len() and as_list() stop at
# 0xFFFFFF elements (and as_list() corrupts the heap). Such an array needs a body of at least 2 bytes an element.
LARGEST_READ = 2 * 0xFFFFFF
# The keys of the body, of prefetch and of a prefetch Bundle read lazily: a request has about ten of each.
MOST_KEYS = 64
# A smaller body is decoded by orjson: fewer instructions, below this (decode + prefetch's read at N = 30, 22 KiB:
# 1.27 M with orjson, 1.52 M lazily; N = 50, 37 KiB: 2.17 M, 1.93 M).
SMALLEST = 32 * 1024
# Below this, the entries are read by msgspec with no sample of them judged first (_Source.mostly_kept), and those of
# every Bundle read by their keys in one pass of the body (_Source.entries): the fixed costs that had made orjson
# faster up to here.
SAMPLED = 128 * 1024
Object, Array = simdjson.Object, simdjson.Array


class Undecided(Exception):
    """The lazy reading cannot promise orjson's result: orjson decodes the body."""


def decode(body: bytes) -> Any:
    """orjson.loads(body), but each prefetch Bundle's `entry` array is `Entries`, and a body orjson refuses only for a
    number beyond a double is read (`beyond_double`). Raises what orjson raises, or NumberBeyondDouble."""
    try:
        if len(body) < SMALLEST or len(body) > LARGEST_READ or body.startswith(BYTE_ORDER_MARK):
            return orjson.loads(body)
        try:
            document = simdjson.Parser().parse(body)
            if type(document) is not Object:
                raise Undecided
            source = _Source(body)
            return {key: _prefetch(value, source) if key == "prefetch" else plain(value)
                    for key, value in _fields(document).items()}
        except Exception:   # simdjson's refusal (ValueError, RuntimeError) or Undecided
            return orjson.loads(body)
    except orjson.JSONDecodeError as refusal:
        return beyond_double(body, refusal)


# --- a number beyond a double: valid JSON, which orjson refuses --------------------------------------------------

INFINITE = "number is infinity when parsed as double"      # orjson's refusal of 1e400, -1e400, 400 digits
LARGEST_INTEGER_DIGITS = 20                                 # 2**64 has 20: longer, an integer is read as a float
SHOWN_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")              # a key named in a 400 as it is; another as "..."


class NumberBeyondDouble(ValueError):
    """A number beyond a double outside prefetch (the request's envelope): the body cannot be read."""


class BeyondDouble(dict):
    """A prefetch resource holding a number beyond a double: left out as invalid FHIR (record.Validator), `where` the
    path (keys and indexes) of the first such number in it."""
    __slots__ = ("where",)


class _Beyond:
    """A number beyond a double, as read here: never a float, so that nothing reads it as a number."""
    __slots__ = ()

    def __repr__(self) -> str:
        return "<a number beyond a double>"


BEYOND = _Beyond()
NOT_A_RESOURCE = "a number beyond a double"


def beyond_double(body: bytes, refusal: orjson.JSONDecodeError) -> Any:
    """A request body orjson refused for a number beyond a double (1e400 is valid JSON: RFC 8259 leaves a number's
    range to the reader): every prefetch resource holding one is a BeyondDouble (invalid FHIR: a FHIR decimal is read
    as a double here); one outside prefetch (the envelope) raises NumberBeyondDouble, naming where. Re-raises
    `refusal` for any other refusal (`_read_beyond_double`). Only on this path, after orjson's refusal: the honest
    path costs nothing."""
    value = _read_beyond_double(body, refusal)
    if type(value) is not dict:
        return value
    for key, item in value.items():
        where = _beyond_at(item, (key,)) if key != "prefetch" or type(item) is not dict else None
        if where:
            shown = ".".join(str(part) if SHOWN_KEY.fullmatch(str(part)) else "..." for part in where)
            raise NumberBeyondDouble(f"a number beyond a double (a 64-bit float) at {shown[:200]}")
    prefetch = value.get("prefetch")
    if type(prefetch) is dict:
        for key, item in prefetch.items():
            prefetch[key] = _marked(item)
    return value


def fhir_beyond_double(body: bytes, refusal: orjson.JSONDecodeError) -> Any:
    """A FHIR answer (a fhirServer's page) orjson refused for a number beyond a double, its resources holding one
    marked as a prefetch value's are (`beyond_double`)."""
    return _marked(_read_beyond_double(body, refusal))


def _read_beyond_double(body: bytes, refusal: orjson.JSONDecodeError) -> Any:
    """`body` read by the stdlib's json with each number beyond a double as BEYOND, the others as orjson reads them;
    raises `refusal` when orjson refused it for another reason, or where the stdlib reads what orjson refuses (NaN
    and Infinity, a lone surrogate escape), or nests too deep. Linear in the body: a long integer is read as a float
    (int() of 100,000 digits costs the square of their number, and refuses more than sys.int_max_str_digits), as
    orjson reads one beyond 64 bits."""
    if not str(refusal).startswith(INFINITE):
        raise refusal
    try:
        value = json.loads(body.decode("utf-8"), parse_float=_real, parse_int=_integer, parse_constant=_not_json)
        orjson.dumps(value, default=_as_null)           # what orjson refuses that the stdlib reads: a lone surrogate
        _beyond_at(value, ())                           # not too deep to be walked
    except (ValueError, TypeError, RecursionError):
        raise refusal from None
    return value


def _real(text: str) -> Any:
    value = float(text)
    return BEYOND if math.isinf(value) else value


def _integer(text: str) -> Any:
    if len(text) <= LARGEST_INTEGER_DIGITS:
        value = int(text)
        if -(1 << 63) <= value < (1 << 64):
            return value
    return _real(text)


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _as_null(value: Any) -> None:
    if value is BEYOND:
        return None
    raise TypeError


def _beyond_at(value: Any, path: tuple) -> tuple | None:
    """The path of the first number beyond a double in `value` (at `path`), else None."""
    if value is BEYOND:
        return path
    if type(value) is dict:
        items = value.items()
    elif type(value) is list:
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _beyond_at(item, path + (key,))
        if found:
            return found
    return None


def _marked(value: Any) -> Any:
    """A prefetch value with its resources holding a number beyond a double made BeyondDouble: the value itself, or
    the resources of its entries. One in the Bundle but outside its resources (its total, an entry's search) stays
    BEYOND: read as a value of the wrong type. A value that is no object holding one is NOT_A_RESOURCE (a 400, as any
    value there that is not an object or null; BEYOND is not JSON, which the request's schema check cannot read)."""
    if type(value) is not dict:
        return NOT_A_RESOURCE if _beyond_at(value, ()) is not None else value
    entries = value.get("entry")
    if value.get("resourceType") != "Bundle" or type(entries) is not list:
        return _resource_marked(value)
    for entry in entries:
        if type(entry) is dict and type(entry.get("resource")) is dict:
            entry["resource"] = _resource_marked(entry["resource"])
    return value


def _resource_marked(resource: dict) -> dict:
    where = _beyond_at(resource, ())
    if where is None:
        return resource
    marked = BeyondDouble(resource)
    marked.where = where
    return marked


def plain(value: Any) -> Any:
    """A simdjson value as orjson decodes it (as_dict keeps the last of a key given twice, as orjson does)."""
    kind = type(value)
    if kind is Object:
        return value.as_dict()
    if kind is Array:
        return value.as_list()
    return value


def _fields(value: Object) -> dict[str, Any]:
    """The object's fields (key -> undecoded value), read key by key; Undecided when a key is given twice (`[key]`
    gives its first value, orjson keeps the last: told from the dict having fewer keys than read, before any value is
    decoded, which a key given 60 times would have made 60 times), when a key holds a NUL (`[key]` stops at the NUL:
    it gives the value of another key, or none), or when it has more than MOST_KEYS keys (`[key]` looks a key up from
    the object's start: reading all of them costs the square of their number)."""
    keys = list(value)
    if len(keys) > MOST_KEYS or "\x00" in "".join(keys):
        raise Undecided
    fields = {key: value[key] for key in keys}
    if len(fields) != len(keys):
        raise Undecided
    return fields


def _prefetch(value: Any, source: _Source) -> Any:
    if type(value) is not Object:
        return plain(value)
    return {key: _bundle(item, key, source) for key, item in _fields(value).items()}


def _bundle(value: Any, key: str, source: _Source) -> Any:
    """A prefetch value: of a Bundle, the `entry` array stays undecoded; anything else is decoded."""
    # One look-up a key (`get`, not `in` and `[key]`): each walks the object's keys from its start, so `entry` is
    # taken from _fields' (a Bundle without an `entry` array given a key twice goes to orjson with its body: the same
    # decoded value).
    if type(value) is not Object or value.get("resourceType") != "Bundle":
        return plain(value)
    fields = _fields(value)
    if type(entry := fields.get("entry")) is Array:
        fields["entry"] = Entries(entry, key, source)       # which plain leaves as it is
        source.arrays.append(entry)
    return {name: plain(item) for name, item in fields.items()}


class _Source:
    """The body; its prefetch values undecoded (msgspec.Raw: their bytes), a Bundle's entries decoded by `_reader(keys)`
    only when that Bundle is read; the body as orjson decodes it, when asked."""
    __slots__ = ("body", "arrays", "values", "decoded", "judged", "small", "lean", "structs")

    def __init__(self, body: bytes):
        self.body, self.arrays, self.values, self.decoded, self.judged = body, [], None, None, {}
        self.small, self.lean, self.structs = len(body) < SAMPLED, {}, {}

    def typed(self, key: str, concepts: frozenset[tuple[str, str, bool]]) -> list | None:
        """The entries of prefetch value `key` as `_typed_reader(concepts)` decodes them, every Bundle in one pass;
        None when msgspec refuses the body's entries (some not of FHIR's shape, or of a type FHIR does not name). Given once: what is given is no
        longer held here (at 10,000 resources, each Bundle's Structs are freed when prefetch has walked them)."""
        entries = getattr(self._prefetch_as(self.structs, concepts, _typed_reader).pop(key, None), "entry", None)
        return entries if type(entries) is list else None

    def _prefetch_as(self, cache: dict, keys: frozenset[str], reader: Callable[[frozenset[str]], msgspec.json.Decoder]
                     ) -> dict:
        """The body's prefetch values as `reader(keys)` decodes them, in one pass, once per `keys` (kept in `cache`);
        {} when msgspec refuses the body (each Bundle is then read another way)."""
        if keys not in cache:
            try:
                cache[keys] = reader(keys).decode(self.body)["prefetch"]
            except Exception:
                cache[keys] = {}
        return cache[keys]

    def _skipped(self) -> dict:
        """The prefetch values, each the slice of the body it is (msgspec.Raw); {} when msgspec cannot skip them."""
        if self.values is None:
            try:
                self.values = _PREFETCH.decode(self.body)["prefetch"]
            except Exception:
                self.values = {}            # not skipped: no Bundle is (each would skip the whole body again)
        return self.values

    def entries(self, key: str, keys: frozenset[str]) -> list | None:
        """The entries of prefetch value `key` decoded by `keys`; None when msgspec does not decode them (what it
        refuses: values nested deeper than Python's recursion limit)."""
        if self.small:
            found = self._prefetch_as(self.lean, keys, _body_reader).get(key)    # else Bundle by Bundle, below
            if type(found) is dict and type(found.get("entry")) is list:
                return found["entry"]
        try:
            return _reader(keys).decode(self._skipped()[key])["entry"]
        except Exception:
            return None

    def whole_entries(self, key: str) -> list:
        """The entries of prefetch value `key` as orjson decodes them: from that value's own slice of the body, not
        the whole body (which may hold far more outside this Bundle: decoding it twice doubled a call's memory)."""
        raw = self._skipped().get(key)
        if raw is None:
            return self.whole()["prefetch"][key]["entry"]
        return orjson.loads(memoryview(raw))["entry"]

    def whole(self) -> dict:
        if self.decoded is None:
            self.decoded = orjson.loads(self.body)
        return self.decoded

    def mostly_kept(self, wanted: Callable[[dict], bool]) -> bool:
        """Whether `wanted` keeps most of a sample of the entries (SAMPLE of each Bundle, spread over it): then
        reading them by their keys first would only add to decoding them whole (a chart of relevant resources
        only, 20,000 of them: 0.2 s more)."""
        if wanted not in self.judged:
            sample = [plain(array[i]) for array in self.arrays
                      for i in range(0, len(array), max(1, -(-len(array) // SAMPLE)))] if SAMPLE else []
            resources = [e.get("resource") for e in sample if type(e) is dict]
            resources = [r for r in resources if type(r) is dict]
            self.judged[wanted] = sum(map(wanted, resources)) * 2 > len(resources) > 0
        return self.judged[wanted]


# The prefetch values of a body, skipped (no Python object but a slice of the body each).
_PREFETCH = msgspec.json.Decoder(TypedDict("Body", {"prefetch": dict[str, msgspec.Raw]}, total=False))
# A JSON value that is not an object, decoded whole (only as an entry or a resource that cannot be read: never
# large but in an attack).
_NOT_OBJECT = Union[list[Any], str, int, float, bool, None]


@functools.cache
def _reader(keys: frozenset[str]) -> msgspec.json.Decoder:
    """Decodes of a Bundle its entries: of each, `resource` (only `keys`) and `search`."""
    resource = TypedDict("Resource", {key: Any for key in sorted(keys)}, total=False)
    entry = TypedDict("Entry", {"resource": Union[resource, _NOT_OBJECT], "search": Any}, total=False)
    return msgspec.json.Decoder(TypedDict("Bundle", {"entry": list[Union[entry, _NOT_OBJECT]]}, total=False))


@functools.cache
def _body_reader(keys: frozenset[str]) -> msgspec.json.Decoder:
    """Decodes of a body the entries of every prefetch Bundle as `_reader(keys)` does."""
    bundle = _reader(keys).type
    return msgspec.json.Decoder(TypedDict("Body", {"prefetch": dict[str, Union[bundle, _NOT_OBJECT]]}, total=False))


# A JSON value that is not an object or an array: hashable, as decoded by orjson.
_SCALAR = Union[str, int, float, bool, None]


class _Code(msgspec.Struct, gc=False):
    """A coding as the selector reads it to match a value set."""
    system: _SCALAR = None          # a string in FHIR; hashable here, so the selector looks it up without a type check
    code: _SCALAR = None


class _Coding(msgspec.Struct, gc=False):
    """A coding of a medication's concept: also its `display`, which may name the medication."""
    system: _SCALAR = None
    code: _SCALAR = None
    display: Any = None


class Reference(msgspec.Struct, gc=False):
    """A FHIR Reference as prefetch and its selector read it: only `reference`, as orjson decodes it (None when absent
    or null: an empty object and one without a reference both read so)."""
    reference: Any = None


class _Search(msgspec.Struct, gc=False):
    mode: Any = None


class _CodeConcept(msgspec.Struct, gc=False):
    coding: Union[list[_Code], None] = None


class _Concept(msgspec.Struct, gc=False):
    coding: Union[list[_Coding], None] = None
    text: Any = None


# FHIR's resource types: R4B's (as fhir.resources names them) and those of R4 that R4B dropped. A Bundle holding a
# resource of any other type (or one whose resourceType is absent or not a string) is not read as Structs
# (`_typed_reader`): its entries are read by their keys, the same choice at a higher cost.
RESOURCE_TYPES = frozenset("""
    Account ActivityDefinition AdministrableProductDefinition AdverseEvent AllergyIntolerance Appointment
    AppointmentResponse AuditEvent Basic Binary BiologicallyDerivedProduct BodyStructure Bundle CapabilityStatement
    CarePlan CareTeam CatalogEntry ChargeItem ChargeItemDefinition Citation Claim ClaimResponse ClinicalImpression
    ClinicalUseDefinition CodeSystem Communication CommunicationRequest CompartmentDefinition Composition ConceptMap
    Condition Consent Contract Coverage CoverageEligibilityRequest CoverageEligibilityResponse DetectedIssue Device
    DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement DiagnosticReport DocumentManifest DocumentReference
    EffectEvidenceSynthesis Encounter Endpoint EnrollmentRequest EnrollmentResponse EpisodeOfCare EventDefinition
    Evidence EvidenceReport EvidenceVariable ExampleScenario ExplanationOfBenefit FamilyMemberHistory Flag Goal
    GraphDefinition Group GuidanceResponse HealthcareService ImagingStudy Immunization ImmunizationEvaluation
    ImmunizationRecommendation ImplementationGuide Ingredient InsurancePlan Invoice Library Linkage List Location
    ManufacturedItemDefinition Measure MeasureReport Media Medication MedicationAdministration MedicationDispense
    MedicationKnowledge MedicationRequest MedicationStatement MedicinalProduct MedicinalProductAuthorization
    MedicinalProductContraindication MedicinalProductDefinition MedicinalProductIndication MedicinalProductIngredient
    MedicinalProductInteraction MedicinalProductManufactured MedicinalProductPackaged MedicinalProductPharmaceutical
    MedicinalProductUndesirableEffect MessageDefinition MessageHeader MolecularSequence NamingSystem NutritionOrder
    NutritionProduct Observation ObservationDefinition OperationDefinition OperationOutcome Organization
    OrganizationAffiliation PackagedProductDefinition Parameters Patient PaymentNotice PaymentReconciliation Person
    PlanDefinition Practitioner PractitionerRole Procedure Provenance Questionnaire QuestionnaireResponse
    RegulatedAuthorization RelatedPerson RequestGroup ResearchDefinition ResearchElementDefinition ResearchStudy
    ResearchSubject RiskAssessment RiskEvidenceSynthesis Schedule SearchParameter ServiceRequest Slot Specimen
    SpecimenDefinition StructureDefinition StructureMap Subscription SubscriptionStatus SubscriptionTopic Substance
    SubstanceDefinition SubstanceNucleicAcid SubstancePolymer SubstanceProtein SubstanceReferenceInformation
    SubstanceSourceMaterial SubstanceSpecification SupplyDelivery SupplyRequest Task TerminologyCapabilities
    TestReport TestScript ValueSet VerificationResult VisionPrescription""".split())


@functools.cache
def _typed_reader(concepts: frozenset[tuple[str, str, bool]]) -> msgspec.json.Decoder:
    """Decodes of a body the entries of every prefetch Bundle as Structs (no dicts: cheaper to make and to read) when
    they are what FHIR says they are: each entry an object, its resource an object or null, of one of FHIR's types
    (RESOURCE_TYPES), `search` an object or null, `id` not an array or object (hashable: prefetch remembers the ids of
    the resources it passes over, to find another version of one it keeps); of subject and patient (and, of a type
    whose concept may name it, medicationReference), when objects, only their `reference` (`Reference`; anything else
    as orjson decodes it). `concepts` gives (resource type, the path of its CodeableConcept, whether its text and
    displays are read): a resource of such a type has that concept as `concept` (its `coding` a list of objects, of
    each a `system` and `code` that are not arrays or objects, and `display` where named) or null. No more: of the
    resources whose check reads more (a Patient's `id`, an OperationOutcome's `issue`), prefetch reads the few met
    whole. One Struct class per type, chosen by msgspec's tagged union on `resourceType` (the class's
    `resourceType`): a resource holds only the fields its type is read for, so the keys, displays and texts of the
    others are skipped unmade (N = 100: -95 k instructions of the pass). msgspec refuses any other shape (a
    resourceType given twice with two values, too), and keeps the last of a key given twice, as orjson does."""
    # Each key of a resource is compared with every field that is not it (most keys are none of them): few fields,
    # in the order FHIR's resources give them (msgspec looks for a key from the field after the last one found).
    read = {rtype: (path, named) for rtype, path, named in concepts}
    references = [(name, Union[Reference, _NOT_OBJECT], None) for name in ("subject", "patient")]
    kinds = []
    for rtype in sorted(RESOURCE_TYPES | set(read)):
        fields, rename = [("id", _SCALAR, None)], None
        if rtype in read:
            path, named = read[rtype]
            fields.append(("concept", Union[_Concept if named else _CodeConcept, None], None))
            rename = {"concept": path}
        fields += references
        if rtype in read and read[rtype][1]:
            # A Reference Struct instead of a dict: fewer objects made and no dict to read.
            fields.append(("medicationReference", Union[Reference, _NOT_OBJECT], None))
        kinds.append(msgspec.defstruct(rtype, fields, gc=False, tag_field="resourceType", tag=rtype, rename=rename,
                                       namespace={"resourceType": rtype}))
    resource = Union[tuple(kinds) + (None,)]
    entry = msgspec.defstruct("Entry", [("resource", resource, None), ("search", Union[_Search, None], None)],
                              gc=False)
    bundle = msgspec.defstruct("Bundle", [("entry", Union[list[entry], None], None)])
    return msgspec.json.Decoder(TypedDict("Body", {"prefetch": dict[str, Union[bundle, _NOT_OBJECT]]}, total=False))


# Up to this many resources kept of one Bundle are found by their index (Entries._whole).
FEW = 64
# Entries of each Bundle decoded whole to judge whether most are kept (_Source.mostly_kept).
SAMPLE = 8


class Entries:
    """A prefetch Bundle's `entry` array, undecoded until `read`."""
    __slots__ = ("array", "key", "source")

    def __init__(self, array: Array, key: str, source: _Source):
        self.array, self.key, self.source = array, key, source

    def __len__(self) -> int:
        return len(self.array)

    def __repr__(self) -> str:
        return f"<{len(self.array)} entries>"

    def read(self, keys: frozenset[str] | None, wanted: Callable[[dict], bool] | None
             ) -> tuple[list, Callable[[list[int]], list[dict]] | None]:
        """The entries as orjson decodes them, but of each entry object only `resource` and `search`, and of its
        resource only `keys`: all of them when keys is None, when `wanted` keeps most of a sample of them or when
        msgspec did not decode them. With them, what gives the resources of the entries at some positions whole
        (None: they are whole)."""
        use = keys is not None and wanted is not None and (self.source.small or not self.source.mostly_kept(wanted))
        decoded = self.source.entries(self.key, keys) if use else None
        if decoded is None:
            return self.source.whole_entries(self.key), None
        return decoded, self._whole

    def typed(self, concepts: frozenset[tuple[str, str, bool]], wanted: Callable[[dict], bool]
              ) -> tuple[list, Callable[[list[int]], list[dict]]] | None:
        """The entries as Structs (`_typed_reader(concepts)`), with what gives the resources of the entries at some
        positions whole; None when they are not read so (read them with `read`): when msgspec refuses them, or, of
        a body of SAMPLED or more, when `wanted` keeps most of a sample of them."""
        if not self.source.small and self.source.mostly_kept(wanted):
            return None
        entries = self.source.typed(self.key, concepts)
        return None if entries is None else (entries, self._whole)

    def _whole(self, positions: list[int]) -> list[dict]:
        """The resources of the entries at `positions` (ascending), as orjson decodes them: up to FEW from the DOM
        (an array is walked from its start to an index), more in one walk of the array, more than FEW and most of
        them by orjson (simdjson's as_dict costs more than orjson once the objects made stay: it does not share the
        keys' strings; but orjson needs the Bundle's slice, found by a pass of the whole body: ~8 instructions a byte,
        more than a few as_dict of a large body, as when a Patient or an OperationOutcome alone in a small Bundle is
        read to check it)."""
        if len(positions) > FEW and len(positions) * 2 > len(self.array):
            entries = self.source.whole_entries(self.key)
            return [entries[i]["resource"] for i in positions]
        if len(positions) <= FEW:
            return [self.array[i].as_dict()["resource"] for i in positions]
        chosen = set(positions)
        return [entry.as_dict()["resource"] for i, entry in enumerate(self.array) if i in chosen]
