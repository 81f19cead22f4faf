"""Input limits beyond the body size (Flask's MAX_CONTENT_LENGTH answers 413 for that one)."""
from __future__ import annotations

from itertools import chain, compress

from ..errors import ApiError

_IS_CONTAINER = frozenset({dict, list}).__contains__


def json_depth(value) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, [] or {} is 1), without recursion.

    Level by level, with the per-value work in C (chain, map, compress): this runs on every body, so it
    costs about a third of orjson.loads of the same body instead of more than decoding it.
    """
    deepest = 0
    level = [value] if type(value) in (dict, list) else []
    while level:
        deepest += 1
        # A generator, not a list: each dict view is freed at once, so the walk does not wake the GC.
        values = list(chain.from_iterable(node.values() if type(node) is dict else node for node in level))
        level = list(compress(values, map(_IS_CONTAINER, map(type, values))))
    return deepest


def prefetch_resource_count(body: dict) -> int:
    """Resources the client sent as prefetch: one per resource, one per Bundle entry."""
    prefetch = body.get("prefetch")
    if not isinstance(prefetch, dict):
        return 0
    count = 0
    for value in prefetch.values():
        if isinstance(value, dict):
            entries = value.get("entry") if value.get("resourceType") == "Bundle" else None
            count += len(entries) if isinstance(entries, list) else 1
    return count


def check_limits(body, max_depth: int, max_resources: int) -> None:
    depth = json_depth(body)
    if depth > max_depth:
        raise ApiError(400, "json_too_deep", f"the JSON body nests {depth} levels deep; at most {max_depth} "
                       "are accepted (AVH_CDS_MAX_JSON_DEPTH)")
    if isinstance(body, dict):
        count = prefetch_resource_count(body)
        if count > max_resources:
            raise ApiError(413, "too_many_resources", f"prefetch carries {count} resources; at most "
                           f"{max_resources} are accepted (AVH_CDS_MAX_PREFETCH_RESOURCES)")
