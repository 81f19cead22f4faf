"""Input limits beyond the body size (Flask's MAX_CONTENT_LENGTH answers 413 for that one)."""
from __future__ import annotations

import functools
from typing import Any, Callable

import jsonschema_rs

from service.errors import ApiError
from service.lazyjson import Entries
from service.nesting import depth_schemas, json_depth


def request_depth(body) -> int:
    """Nesting depth of a request as avh-cds walks it: all of it but the resources inside prefetch Bundles.

    Those are read only by resourceType, code and subject until one is selected; a selected resource is held to
    the same limit on its own, before validation (clinical/record.py), and left out as invalid FHIR when deeper.
    The rest is never walked: the decoders (service/lazyjson.py) refuse more than 1,024 levels.
    """
    prefetch = body.get("prefetch") if isinstance(body, dict) else None
    if not isinstance(prefetch, dict):
        return json_depth(body)
    # One walk; a list of an object's values nests as deep as the object: [body's other values, [prefetch]].
    outside = [v for k, v in body.items() if k != "prefetch"]
    bundles = [[v for k, v in value.items() if k != "entry"]
               if isinstance(value, dict) and value.get("resourceType") == "Bundle" else value
               for value in prefetch.values()]
    return json_depth([outside, [bundles]]) - 1


@functools.cache
def within_depth(max_depth: int) -> Callable[[Any], bool]:
    """Whether a request nests at most max_depth levels as request_depth counts them, checked by jsonschema-rs over the
    Python objects: ~0.2 of request_depth's cost (it copies the request outside the entries and walks that level by
    level in Python: 0.13 M instructions at N = 10). Built once per process and limit."""
    def depth(k: int):
        return {"$ref": f"#/$defs/depth-{k}"} if k >= 0 else False

    def within(k: int, values=None, **named):
        """A value nesting at most k levels, with `values` for an object's values and `named` for some of its keys."""
        if k < 1:
            return depth(k)
        return {"items": depth(k - 1), "additionalProperties": values or depth(k - 1), "properties": named}

    bundle = {"type": "object", "required": ["resourceType"], "properties": {"resourceType": {"const": "Bundle"}}}
    prefetch_value = {"if": bundle, "then": within(max_depth - 2, entry=True), "else": depth(max_depth - 2)}
    schema = {"$defs": depth_schemas(max(max_depth, 0)),
              "allOf": [within(max_depth, prefetch=within(max_depth - 1, prefetch_value))]}
    return jsonschema_rs.Draft202012Validator(schema).is_valid


def prefetch_resource_count(body: dict) -> int:
    """Resources the client sent as prefetch: one per resource, one per Bundle entry."""
    prefetch = body.get("prefetch")
    if not isinstance(prefetch, dict):
        return 0
    count = 0
    for value in prefetch.values():
        if isinstance(value, dict):
            entries = value.get("entry") if value.get("resourceType") == "Bundle" else None
            # The decoder's Entries asked by its type first: isinstance's failed check against list looks `__class__` up
            # on the instance, ~800 instructions a Bundle.
            count += len(entries) if type(entries) is Entries or isinstance(entries, (list, Entries)) else 1
    return count


def _deeper_than(body, max_depth: int) -> int | None:
    """request_depth(body) when it is over max_depth, else None; walked in Python only then, for the message."""
    try:
        if within_depth(max_depth)(body):
            return None
    except ValueError:                  # a value jsonschema-rs does not read as JSON: walked in Python
        pass
    depth = request_depth(body)
    return depth if depth > max_depth else None


def check_limits(body, max_depth: int, max_resources: int) -> None:
    depth = _deeper_than(body, max_depth)
    if depth is not None:
        raise ApiError(400, "json_too_deep", f"the JSON body nests {depth} levels deep; at most {max_depth} "
                       "are accepted (AVH_CDS_MAX_JSON_DEPTH)")
    if isinstance(body, dict):
        count = prefetch_resource_count(body)
        if count > max_resources:
            raise ApiError(413, "too_many_resources", f"prefetch carries {count} resources; at most "
                           f"{max_resources} are accepted (AVH_CDS_MAX_PREFETCH_RESOURCES)")
