"""JSON Schema validation of requests: jsonschema-rs says "valid" in microseconds, jsonschema explains.

The Python jsonschema validator costs ~0.15 ms a request (a tenth of a typical call) even though our
request schema only constrains the top-level shape. jsonschema-rs validates the same schema in a
microsecond or two without converting the body; only when it finds a request invalid does the
Python validator run, so error messages stay exactly what they were, except where the value is a credential.
"""
from __future__ import annotations

import itertools
import json
from typing import Any, Iterator

import jsonschema
import jsonschema_rs


MOST_ERRORS_RANKED = 100       # the errors of an invalid body that best_match ranks to name one in the 400


class SchemaValidator:
    def __init__(self, schema: dict):
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        self.explainer = cls(schema)
        # Formats are annotations, as in the Python validator built without a format checker.
        self._fast = jsonschema_rs.validator_for(schema, validate_formats=False)
        self.write_only = tuple(write_only_paths(schema))

    def is_valid(self, instance: Any) -> bool:
        return self._fast.is_valid(instance) or self.explainer.is_valid(instance)

    def best_error(self, instance: Any) -> jsonschema.ValidationError | None:
        """The error jsonschema's best_match ranks first, None for a valid instance: for one jsonschema-rs accepts,
        nothing is ranked (a valid body's check is the one is_valid call)."""
        if self._fast.is_valid(instance):
            return None
        # Ranked among the first errors only: a body can break the schema once per item ({"feedback": [1, 1, ...]}),
        # and jsonschema makes a ValidationError for each (~15 µs a body byte: minutes for a 16 MiB body).
        errors = itertools.islice(self.explainer.iter_errors(instance), MOST_ERRORS_RANKED)
        return jsonschema.exceptions.best_match(errors)

    def refusal(self, instance: Any) -> str | None:
        """Why the instance is invalid, as 'where: what'; None for a valid one. jsonschema's message quotes the value
        ("'...' does not match ..."): for a part the schema marks writeOnly (fhirAuthorization: a credential), or one
        holding it, the message names the rule instead, so that a credential is never written back in an answer."""
        error = self.best_error(instance)
        if error is None:
            return None
        path = tuple(error.absolute_path)
        where = "/".join(str(p) for p in path) or "(root)"
        if error.validator in QUOTES_NO_VALUE or not any(_on_one_branch(path, secret) for secret in self.write_only):
            return f"{where}: {error.message[:300]}"
        rule = error.schema.get("description") or f"valid under {error.validator} {json.dumps(error.validator_value)[:200]}"
        return f"{where}: must be {rule}; the value sent is not repeated, it may be a credential"

    def __getattr__(self, name: str) -> Any:
        """Anything else (schema, validate, ...) is the Python validator's."""
        return getattr(self.explainer, name)


# jsonschema's messages for these keywords name properties, never the instance's values.
QUOTES_NO_VALUE = frozenset({"required", "dependentRequired"})


def write_only_paths(schema: dict, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The instance paths (through properties) whose schema is writeOnly: JSON Schema's mark of a value sent but
    never given back, such as a credential."""
    for name, subschema in schema.get("properties", {}).items():
        if subschema.get("writeOnly"):
            yield (*path, name)
        else:
            yield from write_only_paths(subschema, (*path, name))


def _on_one_branch(path: tuple, other: tuple) -> bool:
    """One path is within the other (or they are the same)."""
    return path[:len(other)] == other[:len(path)]
