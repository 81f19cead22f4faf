"""The validation cache: same answers as validating every time, bounded, off at size 0."""
import copy

from service.clinical.record import Validator, build_record
from service.config import Settings
from tests.fhir_records import SNOMED, condition

CONDITION = condition((SNOMED, "71286001"), patient_id="p1", id="c1")
INVALID = {**CONDITION, "id": "c2", "onsetDateTime": "not a date"}


def _condition(i):
    return {**CONDITION, "id": f"c{i}"}


def test_a_repeated_resource_is_validated_once_and_gives_the_same_model():
    validate = Validator(size=8)
    first, reason = validate(CONDITION)
    assert reason is None and first.id == "c1"
    again, _ = validate(copy.deepcopy(CONDITION))          # equal JSON, another dict
    assert again is first and len(validate) == 1


def test_changed_content_is_validated_again():
    validate = Validator(size=8)
    first, _ = validate(CONDITION)
    changed, _ = validate({**CONDITION, "onsetDateTime": "2024-01-02"})
    assert changed is not first and str(changed.onsetDateTime) == "2024-01-02"


def test_invalid_resources_are_remembered_with_their_reason():
    validate = Validator(size=8)
    assert validate(INVALID) == validate(INVALID)
    model, reason = validate(INVALID)
    assert model is None and "onsetDateTime" in reason


def test_least_recently_used_results_go_first_and_size_is_bounded():
    validate = Validator(size=3)
    models = [validate(_condition(i))[0] for i in range(3)]
    validate(_condition(0))                                 # 0 is now the most recent
    validate(_condition(3))                                 # evicts 1
    assert len(validate) == 3
    assert validate(_condition(0))[0] is models[0]
    assert validate(_condition(1))[0] is not models[1]


def test_size_zero_validates_every_time():
    validate = Validator(size=0)
    assert validate(CONDITION)[0] is not validate(CONDITION)[0] and len(validate) == 0


def test_json_orjson_cannot_write_is_still_validated():
    validate = Validator(size=8)
    huge = {**CONDITION, "extension": [{"url": "http://x", "valueDecimal": 2 ** 70}]}
    model, reason = validate(huge)
    assert reason is None and model.id == "c1" and len(validate) == 0


def test_record_is_the_same_with_and_without_cache(app):
    selector = app.extensions["avh"].engine.selector
    resources = [CONDITION, INVALID]
    plain = build_record(resources, selector, "p1")
    cached = Validator(size=8)
    build_record(resources, selector, "p1", validate=cached)
    again = build_record(resources, selector, "p1", validate=cached)
    assert [c.id for c in again.of("Condition")] == [c.id for c in plain.of("Condition")] == ["c1"]
    assert again.left_out == plain.left_out and again.left_out[0].ref == "Condition/c2"


def test_cache_size_is_a_setting():
    assert Settings.from_env({}).model_cache_size == 1024
    assert Settings.from_env({"AVH_CDS_MODEL_CACHE_SIZE": "0"}).model_cache_size == 0
