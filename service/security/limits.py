"""Input limits beyond the body size (Flask's MAX_CONTENT_LENGTH answers 413 for that one)."""
from __future__ import annotations

from service.errors import ApiError
from service.lazyjson import Entries
from service.nesting import json_depth


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


def prefetch_resource_count(body: dict) -> int:
    """Resources the client sent as prefetch: one per resource, one per Bundle entry."""
    prefetch = body.get("prefetch")
    if not isinstance(prefetch, dict):
        return 0
    count = 0
    for value in prefetch.values():
        if isinstance(value, dict):
            entries = value.get("entry") if value.get("resourceType") == "Bundle" else None
            count += len(entries) if isinstance(entries, (list, Entries)) else 1
    return count


def check_limits(body, max_depth: int, max_resources: int) -> None:
    depth = request_depth(body)
    if depth > max_depth:
        raise ApiError(400, "json_too_deep", f"the JSON body nests {depth} levels deep; at most {max_depth} "
                       "are accepted (AVH_CDS_MAX_JSON_DEPTH)")
    if isinstance(body, dict):
        count = prefetch_resource_count(body)
        if count > max_resources:
            raise ApiError(413, "too_many_resources", f"prefetch carries {count} resources; at most "
                           f"{max_resources} are accepted (AVH_CDS_MAX_PREFETCH_RESOURCES)")
